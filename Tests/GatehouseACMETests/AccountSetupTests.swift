import Foundation
import Testing
@testable import GatehouseACME

/// The fleet's account: one key and one account however many instances
/// start, against pebble.
@Suite(.serialized, .enabled(if: Pebble.installed, "pebble is not installed (apt install pebble)"))
struct AccountSetupPebbleTests {
    func mode(_ path: String) -> mode_t {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mode & 0o777 : 0
    }

    @Test func twoSetupsShareKeyAndAccount() throws {
        let pebble = try Pebble()
        defer { pebble.stop() }
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        let http = try ACMEHTTPClient(options: .init(trust: pebble.ca))

        let first = try ACMEAccountSetup.loadOrCreate(storage: storage, directoryURL: pebble.directoryURL,
                                                      contact: ["mailto:ops@gatehouse.test"], http: http)
        let second = try ACMEAccountSetup.loadOrCreate(storage: storage, directoryURL: pebble.directoryURL,
                                                       contact: ["mailto:ops@gatehouse.test"], http: http)
        #expect(first.accountURL != nil)
        #expect(first.accountURL == second.accountURL)
        #expect(try first.accountKey.pem() == second.accountKey.pem())
        #expect(try storage.read(storage.accountKey) == first.accountKey.pem())
        #expect(try second.account().status == "valid")

        #expect(mode(storage.accountKey) == 0o600)
        #expect(mode(storage.accountDirectory) == 0o700)
        let recordPath = storage.accountRecord(directoryURL: pebble.directoryURL)
        #expect(mode(recordPath) == 0o600)
        let bytes = try storage.read(recordPath)
        let record = try JSONDecoder().decode(ACMEAccountSetup.Record.self, from: Data(try #require(bytes)))
        #expect(record == ACMEAccountSetup.Record(directoryURL: pebble.directoryURL, accountURL: first.accountURL!))
        // The lock is gone, no temporary files stay.
        #expect(try storage.read(storage.accountLock) == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: storage.accountDirectory).sorted()
            == [recordPath.split(separator: "/").last.map(String.init)!, "key.pem"].sorted())
    }

    /// Instances starting at once: the lock lets one make the key, the
    /// others use it.
    @Test func concurrentSetupsMakeOneKey() throws {
        let pebble = try Pebble()
        defer { pebble.stop() }
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        let directoryURL = pebble.directoryURL, ca = pebble.ca
        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var urls: [String] = []
            var keys: [[UInt8]] = []
            var errors: [String] = []
        }
        let results = Results()
        let threads = (0 ..< 3).map { _ in
            Thread {
                do {
                    let http = try ACMEHTTPClient(options: .init(trust: ca))
                    let client = try ACMEAccountSetup.loadOrCreate(storage: storage, directoryURL: directoryURL, contact: [], http: http)
                    let pem = try client.accountKey.pem()
                    results.lock.withLock {
                        results.urls.append(client.accountURL ?? "")
                        results.keys.append(pem)
                    }
                } catch {
                    results.lock.withLock { results.errors.append("\(error)") }
                }
            }
        }
        threads.forEach { $0.start() }
        while threads.contains(where: { !$0.isFinished }) { usleep(20_000) }
        #expect(results.errors.isEmpty, "\(results.errors)")
        #expect(results.urls.count == 3)
        #expect(Set(results.urls).count == 1)
        #expect(Set(results.keys).count == 1)
    }

    /// A record naming an account the CA does not know (a reset test CA)
    /// is replaced by a registration.
    @Test func staleRecordReregisters() throws {
        let pebble = try Pebble()
        defer { pebble.stop() }
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        let http = try ACMEHTTPClient(options: .init(trust: pebble.ca))
        let key = try PrivateKey.generateP256()
        try storage.write(try key.pem(), to: storage.accountKey)
        let bogus = ACMEAccountSetup.Record(directoryURL: pebble.directoryURL, accountURL: "https://127.0.0.1:1/nope")
        try ACMEAccountSetup.saveRecord(storage, bogus)
        let client = try ACMEAccountSetup.loadOrCreate(storage: storage, directoryURL: pebble.directoryURL, contact: [], http: http)
        #expect(try client.accountKey.pem() == key.pem())
        #expect(client.accountURL?.hasPrefix("https://127.0.0.1:\(pebble.port)/") == true)
        #expect(ACMEAccountSetup.loadRecord(storage, directoryURL: pebble.directoryURL)?.accountURL == client.accountURL)
    }
}

@Suite struct AccountSetupTests {
    struct Unreachable: Error {}

    /// A key file that is there but unusable is an error and stays: it may
    /// be the fleet's account.
    @Test func badKeyIsNeverReplaced() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        try storage.write(Array("not a key".utf8), to: storage.accountKey)
        #expect(throws: ACMEError.self) {
            try ACMEAccountSetup.loadOrCreate(storage: storage, directoryURL: "https://ca.test/dir", contact: []) { _ in throw Unreachable() }
        }
        #expect(try storage.read(storage.accountKey) == Array("not a key".utf8))
        // An RSA key cannot sign ES256.
        try storage.write(try PrivateKey.generateRSA().pem(), to: storage.accountKey)
        #expect(throws: ACMEError.self) {
            try ACMEAccountSetup.loadOrCreate(storage: storage, directoryURL: "https://ca.test/dir", contact: []) { _ in throw Unreachable() }
        }
    }

    /// Another instance holding the account lock: wait, then give up
    /// without making a key.
    @Test func heldLockTimesOut() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        #expect(try DomainLock.account(storage: storage, owner: "other/1/x").acquire())
        do {
            _ = try ACMEAccountSetup.loadOrCreate(storage: storage, directoryURL: "https://ca.test/dir", contact: [], lockWait: 0) { _ in
                throw Unreachable()
            }
            Issue.record("no error")
        } catch let error as ACMEError {
            #expect(error.message.contains("other/1/x"), "\(error)")
        }
        #expect(try storage.read(storage.accountKey) == nil)
        #expect(try DomainLock.account(storage: storage).currentOwner() == "other/1/x")
    }

    @Test func recordRoundTrip() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        #expect(ACMEAccountSetup.loadRecord(storage, directoryURL: "https://ca.test/dir") == nil)
        let record = ACMEAccountSetup.Record(directoryURL: "https://ca.test/dir", accountURL: "https://ca.test/acct/1")
        try ACMEAccountSetup.saveRecord(storage, record)
        #expect(ACMEAccountSetup.loadRecord(storage, directoryURL: "https://ca.test/dir") == record)
        // Another CA's directory has its own record.
        #expect(ACMEAccountSetup.loadRecord(storage, directoryURL: "https://other.test/dir") == nil)
        // Garbage reads as no record.
        try storage.write(Array("{".utf8), to: storage.accountRecord(directoryURL: "https://ca.test/dir"))
        #expect(ACMEAccountSetup.loadRecord(storage, directoryURL: "https://ca.test/dir") == nil)
    }
}
