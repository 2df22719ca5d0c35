# simgym's own Inkling test file: types, consts, reward and terminal functions.
inkling "2.0"
using Number
using Math

const Degrees = 180
const Limit = 30 * Math.Pi / Degrees     # folded to a number
const Half: number = Limit / 2
const Label = "not a number, unused"

type Level number<0 .. 10>
type Pair {
    lo: number,
    hi: number,
}

type PlantState {
    x: number,
    v: number,
    angle: number,
    energy: number,
    `level`: Level,
}

type Observed {
    x: number<-Limit .. Limit>,
    v: number,
    angle: number<-1, 0, 1>,
    `level`: Level,
}

type Command {
    valve: number<0, 1,>,
    mode: Number.Int8<Off = 0, Heat = 1, Cool = 2>,
    stage: Number.UInt8<0 .. 4>,
    gear: number<1 .. 3 step 1>,
}

type Settings {
    x0: number<-1 .. 1>,
    mass: number,
    seed: Number.Int32,
    flag: Number.Bool,
    fixed: -1,
}

function Sq(a: number): number {
    return a * a
}

function Cost(S: PlantState) {
    var c = Sq(S.x) + 0.1 * Math.Pow(S.v, 2)
    if S.energy > 5 {
        c = c + 1
    } else if S.energy < -5 {
        c = c + 2
    }
    return -c
}

function Done(S: PlantState): Number.Bool {
    var done: Number.Bool
    done = false
    if Math.Abs(S.angle) > Limit {
        done = true
    }
    if not (S.x <= 2 and S.x >= -2) {
        done = true
    }
    return done
}

graph (input: Observed): Command {
    concept Control(input): Command {
        curriculum {
            source simulator Plant(Action: Command, Config: Settings): PlantState {
                package "plant"
            }
            reward Cost
            terminal Done
            algorithm {
                Algorithm: "APPO",
                MemoryMode: "none",
            }
            training {
                EpisodeIterationLimit: 50 * 2,
                NoProgressIterationLimit: 100000,
                TotalIterationLimit: 2000000,
            }
            lesson Only {
                scenario {
                    x0: number<-0.5 .. 0.5>,
                    mass: Half,
                    seed: number<1 .. 9 step 2>,
                    flag: number<0, 1>,
                    fixed: -1,
                }
            }
        }
    }
    output Control
}
