# simgym's own Inkling test file: every goal kind, several lessons.
inkling "2.0"
using Goal
using Math

const Band = 0.5

type S {
    a: number,
    b: number,
    c: number,
}

type A {
    u: number<-2 .. 2>,
}

type C {
    a0: number,
    target: number<0 .. 10 step 1>,
}

function Dist(p: number, q: number) {
    return Math.Hypot(p, q)
}

simulator Sim(Action: A, Config: C): S {
}

graph (input: S): A {
    concept Drive(input): A {
        curriculum {
            source Sim
            goal (State: S) {
                avoid `Too Far`: Math.Abs(State.a) in Goal.RangeAbove(10)
                avoid Window weight 2: State.b in Goal.Range(3, 4)
                drive Center: State.a in Goal.Range(-Band, Band) within 20
                reach Top: State.c in Goal.RangeAbove(9)
                minimize Spread weight 0.5: Dist(State.a, State.b) in Goal.RangeBelow(Band)
                maximize Height: State.c in Goal.RangeAbove(3)
            }
            training {
                EpisodeIterationLimit: 300,
                LessonAssessmentWindow: 40,
            }
            lesson Easy {
                scenario {
                    a0: number<-0.1 .. 0.1>,
                    target: 5,
                }
                training {
                    LessonSuccessThreshold: 0.8,
                }
            }
            lesson Medium follows Easy {
                scenario {
                    a0: number<-1 .. 1>,
                    target: number<3 .. 7 step 1>,
                }
                training {
                    LessonRewardThreshold: 150,
                }
            }
            lesson Hard {
                scenario {
                    a0: number<-3 .. 3>,
                    target: number<0 .. 10 step 1>,
                }
            }
        }
    }
}
