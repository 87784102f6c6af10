import GatehouseHTTP

/// A growable byte buffer that keeps its storage from one request to the
/// next (the upstream head, kept for a possible retry). A head is rendered in
/// some twenty pieces: a copy each, without an Array's per-append bookkeeping.
final class ByteBuffer {
    private var base: UnsafeMutableRawPointer
    private(set) var count = 0
    private var capacity: Int

    init(capacity: Int = 1024) {
        self.capacity = capacity
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 1)
    }

    deinit { base.deallocate() }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    func removeAll() { count = 0 }

    @inline(__always)
    func append(_ piece: UnsafeRawBufferPointer) {
        guard let source = piece.baseAddress, piece.count > 0 else { return }
        if count + piece.count > capacity { grow(to: count + piece.count) }
        (base + count).copyMemory(from: source, byteCount: piece.count)
        count += piece.count
    }

    private func grow(to needed: Int) {
        var next = capacity * 2
        while next < needed { next *= 2 }
        let bigger = UnsafeMutableRawPointer.allocate(byteCount: next, alignment: 1)
        bigger.copyMemory(from: base, byteCount: count)
        base.deallocate()
        base = bigger
        capacity = next
    }
}

/// Renders into a `ByteBuffer`.
struct ByteBufferSink: ByteSink {
    let buffer: ByteBuffer
    @inline(__always) mutating func write(_ bytes: UnsafeRawBufferPointer) { buffer.append(bytes) }
}
