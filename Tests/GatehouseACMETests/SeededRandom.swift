/// SplitMix64 (Steele, Lea, Flood 2014): a seedable generator, so every
/// random choice a test makes is the same on each run.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Always the same value: `lowest` makes every `random(in:)` its lower
/// bound, `highest` its upper bound. (Not 0 for the lowest: the standard
/// library's unbiased sampling rejects 0 and would draw again forever.)
struct ConstantRandom: RandomNumberGenerator {
    let value: UInt64
    mutating func next() -> UInt64 { value }

    static var lowest: ConstantRandom { ConstantRandom(value: 1) }
    static var highest: ConstantRandom { ConstantRandom(value: .max) }
}
