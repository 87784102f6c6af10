#if canImport(Glibc)
import Glibc
#endif
import CLibevent
import GatehouseHTTP

/// Writes straight into a libevent output buffer, one `evbuffer_add` per
/// piece: for writes interleaved with chain moves (chunk sizes around body data).
struct EvbufferSink: ByteSink {
    let buffer: OpaquePointer

    @inline(__always)
    mutating func write(_ bytes: UnsafeRawBufferPointer) {
        if let base = bytes.baseAddress, bytes.count > 0 { evbuffer_add(buffer, base, bytes.count) }
    }
}

/// Renders a whole head into space reserved at the end of a libevent buffer
/// and commits it once (`Evbuffer.render`): a response head is some twenty
/// pieces, and an `evbuffer_add` each cost more than the copying.
struct ReservedSpaceSink: ByteSink {
    let buffer: OpaquePointer
    private var space = iovec()
    private var used = 0
    /// Enough for a typical head; a larger one takes further regions.
    private static let region = 2048

    init(buffer: OpaquePointer) { self.buffer = buffer }

    @inline(__always)
    mutating func write(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        if used + bytes.count > space.iov_len, !reserve(bytes.count) {
            evbuffer_add(buffer, source, bytes.count)
            return
        }
        (space.iov_base! + used).copyMemory(from: source, byteCount: bytes.count)
        used += bytes.count
    }

    /// Commits what was written and reserves a fresh region for `count` more
    /// bytes; false when the piece is larger than a region (it is added as is).
    private mutating func reserve(_ count: Int) -> Bool {
        commit()
        guard count <= Self.region, evbuffer_reserve_space(buffer, Self.region, &space, 1) >= 1 else {
            space = iovec()
            return false
        }
        return true
    }

    mutating func commit() {
        guard space.iov_base != nil else { return }
        if used > 0 {
            space.iov_len = used
            evbuffer_commit_space(buffer, &space, 1)
        }
        space = iovec()
        used = 0
    }
}

extension OpaquePointer {
    /// evbuffer length.
    @inline(__always) var evLength: Int { evbuffer_get_length(self) }
}

enum Evbuffer {
    /// Runs `body` with a sink that renders into `buffer` and commits once.
    @inline(__always)
    static func render(into buffer: OpaquePointer, _ body: (inout ReservedSpaceSink) -> Void) {
        var sink = ReservedSpaceSink(buffer: buffer)
        body(&sink)
        sink.commit()
    }

    /// The first `max` buffered bytes, made contiguous in place.
    @inline(__always)
    static func front(_ buffer: OpaquePointer, max: Int) -> UnsafeRawBufferPointer {
        let n = Swift.min(buffer.evLength, max)
        guard n > 0, let p = evbuffer_pullup(buffer, n) else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: p, count: n)
    }

    /// Small pieces are copied into the tail of `dst`: a small body then
    /// shares the response head's chain, and bufferevent_openssl sends the two
    /// as one TLS record and one write(2) instead of two.
    static let copyBelow = 4096

    /// Moves up to `count` bytes between buffers (chains are moved, not copied, where possible).
    @inline(__always)
    static func move(from src: OpaquePointer, to dst: OpaquePointer, count: Int) -> Int {
        let n = min(count, evbuffer_get_length(src))
        if n > 0, n < copyBelow, let bytes = evbuffer_pullup(src, n) {
            guard evbuffer_add(dst, bytes, n) == 0 else { return -1 }
            evbuffer_drain(src, n)
            return n
        }
        return Int(evbuffer_remove_buffer(src, dst, count))
    }
}

/// Monotonic seconds, cheap enough for every read (vDSO, coarse).
@inline(__always)
func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// A libevent timeout from seconds (negative: now).
public func timeval(seconds: Double) -> timeval {
    let s = Swift.max(0, seconds)
    return Glibc.timeval(tv_sec: Int(s), tv_usec: Int((s - Double(Int(s))) * 1_000_000))
}

/// Wall-clock seconds since the epoch (access log timestamps only).
func wallClockNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME_COARSE, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// ASCII case-insensitive comparison with a lowercase literal.
func asciiEqualIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ lower: StaticString) -> Bool {
    guard bytes.count == lower.utf8CodeUnitCount else { return false }
    let l = lower.utf8Start
    for i in 0 ..< bytes.count {
        var b = bytes[i]
        if b >= 65 && b <= 90 { b |= 0x20 }
        if b != l[i] { return false }
    }
    return true
}

/// Precise monotonic seconds, for durations that are reported (the coarse
/// clock above ticks in milliseconds and is only good for timeouts).
func preciseNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
