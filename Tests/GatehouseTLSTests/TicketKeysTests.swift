import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import GatehouseTLS

struct TicketKeysTests {
    private func lookup(_ keys: TicketKeys, _ key: TicketKey, at now: Int) -> TicketKeys.Lookup {
        key.name.withUnsafeBytes { keys.decryptionKey(named: $0, now: now) }
    }

    @Test func randomKeysRotateAndThePreviousOneStillDecrypts() throws {
        let keys = try TicketKeys()
        let start = TicketKeys.now()
        let interval = TicketKeys.rotationInterval
        let first = try #require(keys.encryptionKey(now: start))
        #expect(keys.encryptionKey(now: start + interval - 1) == first)
        #expect(lookup(keys, first, at: start) == .current(first))

        let second = try #require(keys.encryptionKey(now: start + interval))
        #expect(second != first)
        #expect(lookup(keys, first, at: start + interval) == .old(first), "previous key decrypts, ticket renewed")
        #expect(lookup(keys, second, at: start + interval) == .current(second))

        // One more rotation: the first key is gone for good.
        let third = try #require(keys.encryptionKey(now: start + 2 * interval))
        #expect(lookup(keys, first, at: start + 2 * interval) == .unknown)
        #expect(lookup(keys, second, at: start + 2 * interval) == .old(second))
        #expect(third != second)
    }

    @Test func keysUnusedForTwoIntervalsAreAllDropped() throws {
        let keys = try TicketKeys()
        let start = TicketKeys.now()
        let first = try #require(keys.encryptionKey(now: start))
        // Nobody asked for a ticket for a day: no stale key survives the gap.
        #expect(lookup(keys, first, at: start + 2 * TicketKeys.rotationInterval + 5) == .unknown)
    }

    @Test func fileKeysFirstEncryptsAllDecryptNoRotation() throws {
        var bytes = [UInt8](repeating: 0, count: 160)
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i * 7 + 1) }
        let path = try writeTemp(bytes)
        defer { unlink(path) }
        let keys = try TicketKeys(file: path)
        let first = TicketKey(bytes: bytes[0 ..< 80])
        let second = TicketKey(bytes: bytes[80 ..< 160])
        #expect(first.name == Array(bytes[0 ..< 16]) && first.hmacKey == Array(bytes[16 ..< 48]) && first.aesKey == Array(bytes[48 ..< 80]))
        let later = TicketKeys.now() + 10 * TicketKeys.rotationInterval
        #expect(keys.encryptionKey(now: later) == first, "a fleet's file is never rotated in process")
        #expect(lookup(keys, second, at: later) == .old(second))
        #expect(keys.source.contains("2 key(s)"))
    }

    @Test func badKeyFilesNameTheFile() throws {
        let path = try writeTemp([UInt8](repeating: 1, count: 48))
        defer { unlink(path) }
        #expect(throws: TicketKeyError.self) { try TicketKeys(file: path) }
        do {
            _ = try TicketKeys(file: path)
        } catch {
            #expect(error.description.contains(path) && error.description.contains("80-byte"))
        }
        do {
            _ = try TicketKeys(file: "/nonexistent/tickets.key")
        } catch {
            #expect(error.description.contains("/nonexistent/tickets.key: ticket_key_file: cannot read"))
        }
    }

    private func writeTemp(_ bytes: [UInt8]) throws -> String {
        var template = Array("/tmp/gatehouse-tickets-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        try #require(fd >= 0)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
