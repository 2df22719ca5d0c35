def reward(states, terminated, truncated):
    return -abs(states["x"]) - (10.0 if terminated else 0.0)
