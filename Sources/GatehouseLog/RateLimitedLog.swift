#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A log line for something a client can trigger at will (a refused request,
/// a capped address): written at most once per interval, process-wide, with
/// the number of lines left out since the last one. The counters in the
/// metrics carry the totals; this keeps a scanner from flooding the journal.
public final class RateLimitedLog: Sendable {
    private let level: LogLevel
    private let intervalNanos: Int64
    /// Monotonic time before which nothing more is written.
    private let nextAllowed = Atomic<Int64>(0)
    private let suppressed = Atomic<UInt64>(0)

    public init(level: LogLevel = .notice, intervalSeconds: Double = 1) {
        self.level = level
        self.intervalNanos = Int64(intervalSeconds * 1e9)
    }

    /// Writes `message` unless a line went out less than an interval ago.
    /// `now`: monotonic nanoseconds (a parameter for the tests).
    public func write(_ message: @autoclosure () -> String, now: Int64 = RateLimitedLog.monotonicNanos()) {
        guard Log.enabled(level), claim(now: now) else { return }
        let skipped = suppressed.exchange(0, ordering: .relaxed)
        let suffix = skipped == 0 ? "" : " (\(skipped) more like it in the last interval)"
        Log.write(level) { message() + suffix }
    }

    /// True when this caller may write now; otherwise the line is counted as suppressed.
    func claim(now: Int64) -> Bool {
        var next = nextAllowed.load(ordering: .relaxed)
        while now >= next {
            let (exchanged, current) = nextAllowed.compareExchange(
                expected: next, desired: now + intervalNanos, ordering: .relaxed)
            if exchanged { return true }
            next = current
        }
        suppressed.wrappingAdd(1, ordering: .relaxed)
        return false
    }

    public static func monotonicNanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}
