"""Baselines for the heated house (simgym evaluate --baseline controllers.py:NAME)."""


def thermostat(states: dict[str, float]) -> dict[str, int]:
    """The classic on/off thermostat: heat while the house is below its setpoint."""
    return {"hvacON": 1 if states["Tin"] < states["Tset"] else 0}


def off(states: dict[str, float]) -> dict[str, int]:
    """Never heat."""
    return {"hvacON": 0}
