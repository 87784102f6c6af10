/// SNI / Host name → domain id, with RFC 6125 §6.4.3 wildcard semantics.
///
/// Layout keeps 100,000+ domains cheap: all names live in one contiguous byte arena,
/// and the open-addressing table holds one `UInt64` per slot (32-bit hash tag + entry
/// number), so there are no per-name heap objects and a lookup touches a few cache
/// lines. Lookups never allocate: the query is lowercased on the fly while hashing and
/// compared byte-wise against the arena.
///
/// Wildcards are stored verbatim ("*.example.com"); a wildcard lookup hashes "*." plus
/// the query minus its first label, so exact and wildcard entries share one table.
public struct NameIndex: Sendable {
    /// `tag << 32 | (entry + 1)`; 0 marks an empty slot.
    private let slots: [UInt64]
    /// Entry `i` is `arena[offsets[i] ..< offsets[i + 1]]`.
    private let offsets: [UInt32]
    private let domains: [UInt32]
    private let arena: [UInt8]
    /// Per-index random seed so nobody can precompute colliding names.
    private let seed: UInt64
    private let mask: Int

    /// The longest name DNS allows (RFC 1035, presentation form without trailing dot).
    static let maxNameLength = 253

    /// `entries` should already be normalized; ASCII case and one trailing dot are
    /// normalized again anyway. If a name repeats, its first entry wins (the loader
    /// rejects duplicates before getting here).
    public init(_ entries: [(name: String, domain: Int)]) {
        seed = UInt64.random(in: .min ... .max)
        var arena: [UInt8] = []
        var offsets: [UInt32] = [0]
        var domains: [UInt32] = []
        arena.reserveCapacity(entries.reduce(0) { $0 + $1.name.utf8.count })
        offsets.reserveCapacity(entries.count + 1)
        domains.reserveCapacity(entries.count)

        // Load factor <= 2/3 keeps linear-probe chains short.
        var capacity = 8
        while capacity * 2 < entries.count * 3 { capacity <<= 1 }
        var slots = [UInt64](repeating: 0, count: entries.isEmpty ? 0 : capacity)
        let mask = capacity - 1

        for (name, domain) in entries {
            precondition(domain >= 0 && domain < Int(UInt32.max), "domain id out of range")
            var bytes = Array(name.utf8)
            if bytes.last == UInt8(ascii: ".") { bytes.removeLast() }
            for i in bytes.indices { bytes[i] = NameIndex.lower(bytes[i]) }
            guard !bytes.isEmpty else { continue }

            var h = seed
            for b in bytes { h = NameIndex.mix(h, b) }
            h = NameIndex.finish(h)

            // Skip duplicates so the first definition wins.
            var i = Int(truncatingIfNeeded: h) & mask
            var duplicate = false
            while slots[i] != 0 {
                let e = Int(slots[i] & 0xFFFF_FFFF) - 1
                if slots[i] >> 32 == h >> 32,
                   arena[Int(offsets[e]) ..< Int(offsets[e + 1])].elementsEqual(bytes) {
                    duplicate = true
                    break
                }
                i = (i + 1) & mask
            }
            if duplicate { continue }

            let entry = domains.count
            precondition(arena.count + bytes.count < Int(UInt32.max), "name arena too large")
            arena.append(contentsOf: bytes)
            offsets.append(UInt32(arena.count))
            domains.append(UInt32(domain))
            slots[i] = (h & 0xFFFF_FFFF_0000_0000) | UInt64(entry + 1)
        }

        self.slots = slots
        self.offsets = offsets
        self.domains = domains
        self.arena = arena
        self.mask = mask
    }

    /// Builds the index for a set of domains (every name → that domain's id).
    public init(domains: [DomainConfig]) {
        var entries: [(name: String, domain: Int)] = []
        entries.reserveCapacity(domains.reduce(0) { $0 + $1.names.count })
        for d in domains {
            for n in d.names { entries.append((n, d.id)) }
        }
        self.init(entries)
    }

    /// Number of distinct names indexed.
    public var count: Int { domains.count }

    public func lookup(_ name: String) -> Int? {
        var name = name
        return name.withUTF8 { lookup(UnsafeRawBufferPointer($0)) }
    }

    /// Exact match first, then a wildcard covering exactly the leftmost label.
    /// Case-insensitive; one trailing dot ignored. The caller must strip any ":port".
    /// Anything that cannot be a host name (empty, too long, bytes outside
    /// letters/digits/"-"/"_"/".", including NUL, "*" and >= 0x80) returns nil.
    public func lookup(_ name: UnsafeRawBufferPointer) -> Int? {
        var n = name.count
        guard !slots.isEmpty, n > 0 else { return nil }
        if name[n - 1] == UInt8(ascii: ".") { n -= 1 }
        guard n > 0, n <= NameIndex.maxNameLength else { return nil }

        var h = seed
        var firstDot = -1
        for i in 0 ..< n {
            let b = name[i]
            guard NameIndex.isHostByte(b) else { return nil }
            if b == UInt8(ascii: "."), firstDot < 0 { firstDot = i }
            h = NameIndex.mix(h, NameIndex.lower(b))
        }
        if let d = probe(NameIndex.finish(h), name, start: 0, end: n, wildcard: false) {
            return d
        }

        // "*.example.com" covers "a.example.com" only: a non-empty first label
        // followed by a non-empty remainder.
        guard firstDot > 0, firstDot < n - 1 else { return nil }
        var w = NameIndex.mix(NameIndex.mix(seed, UInt8(ascii: "*")), UInt8(ascii: "."))
        for i in firstDot + 1 ..< n { w = NameIndex.mix(w, NameIndex.lower(name[i])) }
        return probe(NameIndex.finish(w), name, start: firstDot + 1, end: n, wildcard: true)
    }

    /// Walks the probe chain for `hash`, comparing `query[start..<end]` (lowercased,
    /// prefixed with "*." when `wildcard`) against each candidate with a matching tag.
    @inline(__always)
    private func probe(_ hash: UInt64, _ query: UnsafeRawBufferPointer, start: Int, end: Int, wildcard: Bool) -> Int? {
        let tag = hash >> 32
        let prefix = wildcard ? 2 : 0
        let wanted = end - start + prefix
        return slots.withUnsafeBufferPointer { slots in
            arena.withUnsafeBufferPointer { arena in
                var i = Int(truncatingIfNeeded: hash) & mask
                while true {
                    let slot = slots[i]
                    if slot == 0 { return nil }
                    if slot >> 32 == tag {
                        let e = Int(slot & 0xFFFF_FFFF) - 1
                        let from = Int(offsets[e])
                        if Int(offsets[e + 1]) - from == wanted,
                           !wildcard || (arena[from] == UInt8(ascii: "*") && arena[from + 1] == UInt8(ascii: ".")) {
                            var equal = true
                            var a = from + prefix
                            for q in start ..< end {
                                if arena[a] != NameIndex.lower(query[q]) { equal = false; break }
                                a += 1
                            }
                            if equal { return Int(domains[e]) }
                        }
                    }
                    i = (i + 1) & mask
                }
            }
        }
    }

    @inline(__always)
    static func lower(_ b: UInt8) -> UInt8 {
        b &- UInt8(ascii: "A") < 26 ? b | 0x20 : b
    }

    @inline(__always)
    static func isHostByte(_ b: UInt8) -> Bool {
        let l = b | 0x20
        return (l &- UInt8(ascii: "a") < 26) || (b &- UInt8(ascii: "0") < 10)
            || b == UInt8(ascii: "-") || b == UInt8(ascii: ".") || b == UInt8(ascii: "_")
    }

    /// FNV-1a step: cheap per byte, and the seed plus `finish` make the result
    /// unpredictable and well spread in both the low (slot) and high (tag) bits.
    @inline(__always)
    static func mix(_ h: UInt64, _ b: UInt8) -> UInt64 {
        (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3
    }

    /// MurmurHash3 fmix64 avalanche.
    @inline(__always)
    static func finish(_ h: UInt64) -> UInt64 {
        var k = h
        k ^= k >> 33
        k &*= 0xFF51_AFD7_ED55_8CCD
        k ^= k >> 33
        k &*= 0xC4CE_B9FE_1A85_EC53
        k ^= k >> 33
        return k
    }
}
