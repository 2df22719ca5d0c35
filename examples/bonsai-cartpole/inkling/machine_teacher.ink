# The cart-pole's training definition as a Bonsai user wrote it (our own file, for our sim in
# ../sim/cartpole.py): two `avoid` goals instead of a reward function.
# `simgym import-inkling machine_teacher.ink --sim ../sim/cartpole.py:CartPole` writes
# spec.yaml and train.yaml beside it (docs/inkling.md).
inkling "2.0"
using Math
using Goal
using Number

const FallAngle = 12 * Math.Pi / 180   # rad: the pole has fallen beyond this
const TrackHalfWidth = 2.4             # m: the cart leaves the track beyond this

type SimState {
    cart_position: number,
    cart_velocity: number,
    pole_angle: number,
    pole_angular_velocity: number,
    pole_tip_position: number,
    target_pole_position: number,
    cart_mass: number,
    pole_mass: number,
    pole_length: number,
}

type ObservableState {
    cart_position: number<-TrackHalfWidth .. TrackHalfWidth>,
    cart_velocity: number<-3 .. 3>,
    pole_angle: number<-0.3 .. 0.3>,
    pole_angular_velocity: number<-3 .. 3>,
}

type Action {
    command: number<-1 .. 1>,   # scaled by the sim to ±10 N
}

type SimConfig {
    initial_cart_position: number<-TrackHalfWidth .. TrackHalfWidth>,
    initial_cart_velocity: number,
    initial_pole_angle: number,
    initial_angular_velocity: number,
}

graph (input: ObservableState): Action {
    concept BalancePole(input): Action {
        curriculum {
            source simulator CartPole(Action: Action, Config: SimConfig): SimState {
            }

            training {
                EpisodeIterationLimit: 200    # 4 s of 20 ms steps
            }

            goal (State: SimState) {
                avoid FallOver:
                    Math.Abs(State.pole_angle) in Goal.RangeAbove(FallAngle)
                avoid OutOfRange:
                    Math.Abs(State.cart_position) in Goal.RangeAbove(TrackHalfWidth)
            }

            lesson `Start Near Upright` {
                scenario {
                    initial_cart_position: number<-0.5 .. 0.5>,
                    initial_cart_velocity: number<-0.05 .. 0.05>,
                    initial_pole_angle: number<-0.05 .. 0.05>,
                    initial_angular_velocity: number<-0.05 .. 0.05>,
                }
            }
        }
    }
}
