import Foundation
import Testing
@testable import GatehouseACME

@Suite struct BackoffTests {
    let now: Int64 = 1_800_000_000

    /// 60 s doubling up to a day; the generator's extremes show the jitter
    /// takes off at most a quarter.
    @Test func exponentialWithJitter() {
        var high = ConstantRandom.highest, low = ConstantRandom.lowest
        let expected: [Int64] = [60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 30720, 61440, 86400, 86400]
        for (i, delay) in expected.enumerated() {
            #expect(Backoff.delay(failures: i + 1, retryAfter: nil, rateLimited: false, using: &low) == delay)
            #expect(Backoff.delay(failures: i + 1, retryAfter: nil, rateLimited: false, using: &high) == delay - delay / 4)
        }
        // Very many failures neither overflow nor exceed a day.
        #expect(Backoff.delay(failures: 10_000, retryAfter: nil, rateLimited: false, using: &low) == 86_400)
        #expect(Backoff.delay(failures: 0, retryAfter: nil, rateLimited: false, using: &low) == 60)
    }

    @Test func jitterSpreads() {
        var random = SeededRandom(seed: 7)
        let delays = Set((0 ..< 200).map { _ in Backoff.delay(failures: 5, retryAfter: nil, rateLimited: false, using: &random) })
        #expect(delays.count > 100)
        #expect(delays.allSatisfy { $0 >= 720 && $0 <= 960 })
    }

    @Test func retryAfterWinsWhenLonger() {
        var low = ConstantRandom.lowest
        #expect(Backoff.delay(failures: 1, retryAfter: 600, rateLimited: false, using: &low) == 600)
        // Shorter than the exponential delay: the delay stays.
        #expect(Backoff.delay(failures: 8, retryAfter: 600, rateLimited: false, using: &low) == 7680)
        // With Retry-After, rateLimited needs no hour of its own.
        #expect(Backoff.delay(failures: 1, retryAfter: 120, rateLimited: true, using: &low) == 120)
        // Absurd or negative values are bounded.
        #expect(Backoff.delay(failures: 1, retryAfter: 999_999_999, rateLimited: false, using: &low) == Backoff.retryAfterLimit)
        #expect(Backoff.delay(failures: 1, retryAfter: -5, rateLimited: false, using: &low) == 60)
    }

    @Test func rateLimitedWaitsAnHour() {
        var low = ConstantRandom.lowest
        #expect(Backoff.delay(failures: 1, retryAfter: nil, rateLimited: true, using: &low) == 3600)
        #expect(Backoff.delay(failures: 12, retryAfter: nil, rateLimited: true, using: &low) == 86_400)
    }

    @Test func failuresAndSuccess() {
        var random = ConstantRandom.lowest
        var b = Backoff.none
        #expect(!b.isWaiting(now: now))
        b.recordFailure(now: now, retryAfter: nil, rateLimited: false, detail: "connection refused", using: &random)
        #expect(b.failures == 1 && b.nextAttempt == now + 60 && b.lastFailure == now && b.lastError == "connection refused")
        #expect(b.isWaiting(now: now + 59))
        #expect(!b.isWaiting(now: now + 60))
        b.recordFailure(now: now + 60, retryAfter: nil, rateLimited: false, detail: String(repeating: "x", count: 5000), using: &random)
        #expect(b.failures == 2 && b.nextAttempt == now + 60 + 120)
        #expect(b.lastError?.count == Backoff.errorTextLimit)
        b.recordSuccess()
        #expect(b == .none && b.isNone)
    }

    @Test func savedAndLoaded() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        var random = ConstantRandom.lowest
        #expect(Backoff.load("customer.example", from: storage, now: now) == (.none, nil))

        var b = Backoff.none
        b.recordFailure(now: now, retryAfter: 300, rateLimited: true, detail: "urn:ietf:params:acme:error:rateLimited: \"quoted\"\n",
                        using: &random)
        try b.save("customer.example", to: storage)
        let path = try storage.backoff("customer.example")
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        let loaded = Backoff.load("customer.example", from: storage, now: now + 10)
        #expect(loaded.backoff == b)
        #expect(loaded.problem == nil)

        // Success removes the file.
        b.recordSuccess()
        try b.save("customer.example", to: storage)
        #expect(try storage.read(path) == nil)
        #expect(Backoff.load("customer.example", from: storage, now: now) == (.none, nil))
        // Saving none with no directory at all is fine.
        try Backoff.none.save("other.example", to: storage)
    }

    /// A corrupt file means no backoff, and says so.
    @Test func corruptFilesIgnoredAndReported() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        let path = try storage.backoff("customer.example")
        for bad in ["", "{", "null", "[]", "{\"failures\": \"three\", \"nextAttempt\": 1}", "{\"failures\": -1, \"nextAttempt\": 1}",
                    "{\"failures\": 1, \"nextAttempt\": 99999999999}", "\u{0}\u{1}binary"] {
            try storage.write(Array(bad.utf8), to: path)
            let loaded = Backoff.load("customer.example", from: storage, now: now)
            #expect(loaded.backoff == .none, "\(bad)")
            #expect(loaded.problem != nil, "\(bad)")
        }
        // Unreadable (a directory in its place): none, reported.
        try storage.remove(path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let loaded = Backoff.load("customer.example", from: storage, now: now)
        #expect(loaded.backoff == .none && loaded.problem != nil)
        // A name that cannot be a directory.
        #expect(Backoff.load("../etc", from: storage, now: now).problem != nil)
    }
}
