#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The account a fleet shares: one key in `account/key.pem`, one account
/// per CA recorded in `account/<directory id>.json`. The key is made and
/// registered under `account/lock`, so instances starting together do not
/// each make a key and an account.
public enum ACMEAccountSetup {
    /// What `account/<directory id>.json` holds.
    public struct Record: Codable, Sendable, Equatable {
        public var directoryURL: String
        public var accountURL: String
    }

    /// How long to wait for another instance holding the account lock.
    public static let defaultLockWait: Int64 = 2 * DomainLock.defaultTTL

    /// A client with its account URL set, for `directoryURL`. With a key
    /// and a record already stored (every start but the fleet's first), no
    /// lock is taken: the account is confirmed with onlyReturnExisting
    /// (RFC 8555 §7.3.1). Otherwise, under the lock, the key is loaded or
    /// made (P-256, 0600) and the account found or registered (§7.3).
    /// Blocking; for the ACME thread.
    public static func loadOrCreate(storage: ACMEStorage, directoryURL: String, contact: [String],
                                    termsOfServiceAgreed: Bool = true, lockWait: Int64 = defaultLockWait,
                                    lockOwner: String = DomainLock.makeOwner(),
                                    makeClient: (PrivateKey) throws -> ACMEClient) throws -> ACMEClient {
        if let key = try loadKey(storage), let record = loadRecord(storage, directoryURL: directoryURL) {
            let client = try makeClient(key)
            if try confirm(client, record: record, storage: storage, directoryURL: directoryURL) { return client }
        }
        let lock = DomainLock.account(storage: storage, owner: lockOwner)
        let deadline = DomainLock.now() + lockWait
        while try !lock.acquire() {
            guard DomainLock.now() < deadline else {
                throw ACMEError("\(lock.path): held by \(try lock.currentOwner() ?? "another instance") for over \(lockWait) s")
            }
            usleep(500_000)
        }
        defer { try? lock.release() }

        // Another instance may have finished while we waited: look again.
        let key: PrivateKey
        if let stored = try loadKey(storage) {
            key = stored
        } else {
            key = try PrivateKey.generateP256()
            try storage.write(try key.pem(), to: storage.accountKey)
        }
        let client = try makeClient(key)
        if let record = loadRecord(storage, directoryURL: directoryURL),
           try confirm(client, record: record, storage: storage, directoryURL: directoryURL) {
            return client
        }
        // §7.3.1: for a key already registered this returns its account,
        // so a lost record costs no second account.
        let account = try client.newAccount(contact: contact, termsOfServiceAgreed: termsOfServiceAgreed)
        try saveRecord(storage, Record(directoryURL: directoryURL, accountURL: account.url))
        return client
    }

    /// The same, with a client over `http`.
    public static func loadOrCreate(storage: ACMEStorage, directoryURL: String, contact: [String], http: ACMEHTTPClient,
                                    termsOfServiceAgreed: Bool = true, lockWait: Int64 = defaultLockWait) throws -> ACMEClient {
        try loadOrCreate(storage: storage, directoryURL: directoryURL, contact: contact, termsOfServiceAgreed: termsOfServiceAgreed,
                         lockWait: lockWait) { ACMEClient(directoryURL: directoryURL, accountKey: $0, http: http) }
    }

    /// The stored account key; nil when there is none. One that is there
    /// but unusable is an error, never replaced: it may be the account.
    static func loadKey(_ storage: ACMEStorage) throws(ACMEError) -> PrivateKey? {
        guard let pem = try storage.read(storage.accountKey, limit: 64 * 1024) else { return nil }
        let key: PrivateKey
        do {
            key = try PrivateKey(pem: pem)
        } catch {
            throw ACMEError("\(storage.accountKey): \(error)")
        }
        // ES256 is what JWS here signs with (RFC 7518 §3.4).
        guard key.kind == .p256 else { throw ACMEError("\(storage.accountKey): the account key must be ECDSA P-256") }
        return key
    }

    /// The record for this directory; nil when missing or unreadable (the
    /// account is then looked up again by key, which is harmless).
    static func loadRecord(_ storage: ACMEStorage, directoryURL: String) -> Record? {
        guard let bytes = try? storage.read(storage.accountRecord(directoryURL: directoryURL), limit: 64 * 1024),
              let record = try? JSONDecoder().decode(Record.self, from: Data(bytes)),
              record.directoryURL == directoryURL, !record.accountURL.isEmpty else { return nil }
        return record
    }

    static func saveRecord(_ storage: ACMEStorage, _ record: Record) throws(ACMEError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data: Data
        do {
            data = try encoder.encode(record)
        } catch {
            throw ACMEError("cannot encode the account record: \(error)")
        }
        try storage.write(Array(data), to: storage.accountRecord(directoryURL: record.directoryURL))
    }

    /// Whether the recorded account exists for the key (§7.3.1). False when
    /// the CA has none (accountDoesNotExist: a test CA reset, say); then it
    /// is registered again. A different URL replaces the record.
    static func confirm(_ client: ACMEClient, record: Record, storage: ACMEStorage, directoryURL: String) throws -> Bool {
        let found: String
        do {
            found = try client.newAccount(contact: [], onlyReturnExisting: true).url
        } catch let error as ACMERequestError where error.problem?.type == accountDoesNotExist {
            return false
        }
        if found != record.accountURL {
            try saveRecord(storage, Record(directoryURL: directoryURL, accountURL: found))
        }
        return true
    }

    static let accountDoesNotExist = "urn:ietf:params:acme:error:accountDoesNotExist"
}
