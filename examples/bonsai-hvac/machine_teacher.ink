# Bonsai-style training definition for the on/off heated house (sim/house.py).
# `simgym import-inkling machine_teacher.ink --sim sim/house.py:House` writes spec.yaml and
# train.yaml beside it (docs/inkling.md).
inkling "2.0"
using Math
using Goal
using Number

const MaxDeviation = 1      # K: the comfort band around the setpoint
const StepsPerHour = 12     # 5-minute steps
const EpisodeHours = 12

# Everything the sim reports.
type SimState {
    Tin: number,     # °C inside
    Tout: number,    # °C outside
    Tset: number,    # °C setpoint
    hour: number,    # time of day
    hvacON: number,  # the heater's last command
}

# What the brain sees. Tout has no range: simgym estimates one before training.
type ObservableState {
    Tin: number<0 .. 35>,
    Tout: number,
    Tset: number<18 .. 24>,
    hour: number<0 .. 24>,
}

type SimAction {
    hvacON: number<off = 0, on = 1>,
}

type SimConfig {
    Tset: Number.Int8<18 .. 24>,
    Tin_initial: number<10 .. 26>,
    schedule_index: Number.UInt8<0 .. 3>,   # an index: integers only
}

function TempDiff(Tin: number, Tset: number) {
    return Math.Abs(Tin - Tset)
}

simulator House(Action: SimAction, Config: SimConfig): SimState {
    package "house"
}

graph (input: ObservableState): SimAction {
    concept KeepComfort(input): SimAction {
        curriculum {
            source House

            training {
                EpisodeIterationLimit: StepsPerHour * EpisodeHours
            }

            goal (State: SimState) {
                minimize `Temp Deviation`:
                    TempDiff(State.Tin, State.Tset) in Goal.RangeBelow(MaxDeviation)
            }

            lesson `Fixed Setpoint` {
                scenario {
                    Tset: 21,
                    Tin_initial: number<19 .. 23>,
                    schedule_index: number<0 .. 3 step 1>,
                }
                training {
                    LessonSuccessThreshold: 0.6,
                    LessonAssessmentWindow: 50,
                }
            }

            lesson `Any Setpoint` {
                scenario {
                    Tset: number<18 .. 24 step 1>,
                    Tin_initial: number<12 .. 24>,
                    schedule_index: number<0 .. 3 step 1>,
                }
            }
        }
    }
}
