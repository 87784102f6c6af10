import Foundation
import Testing
@testable import GatehouseACME

@Suite struct DomainLockTests {
    let now: Int64 = 1_800_000_000

    func mode(_ path: String) -> mode_t {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mode & 0o777 : 0
    }

    @Test func ownerIDs() {
        let a = DomainLock.makeOwner(), b = DomainLock.makeOwner()
        #expect(a != b)
        #expect(a.contains("/\(getpid())/"))
        #expect(!a.contains(" ") && !a.contains("\n"))
    }

    /// Two instances contend: one wins, the other sees it held until it is
    /// released.
    @Test func contention() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        let a = try DomainLock.domain("customer.example", storage: storage, owner: "host-a/1/aa")
        let b = try DomainLock.domain("customer.example", storage: storage, owner: "host-b/1/bb")
        #expect(try a.acquire(now: now))
        #expect(a.expiry == now + DomainLock.defaultTTL)
        #expect(try !b.acquire(now: now + 1))
        #expect(b.expiry == nil)
        #expect(try b.currentOwner() == "host-a/1/aa")
        // Owner-only, directories too (RFC 8555 §11.1 for the storage).
        #expect(mode(a.path) == 0o600)
        #expect(mode(scratch.path + "/certificates/customer.example") == 0o700)
        #expect(mode(scratch.path + "/certificates") == 0o700)
        // Acquiring again while holding it just extends it.
        #expect(try a.acquire(now: now + 5))
        #expect(a.expiry == now + 5 + DomainLock.defaultTTL)
        try a.release(now: now + 10)
        #expect(a.expiry == nil)
        #expect(try storage.read(a.path) == nil)
        #expect(try b.acquire(now: now + 11))
        #expect(try !a.acquire(now: now + 12))
        #expect(try a.currentOwner() == "host-b/1/bb")
    }

    @Test func accountLockPath() {
        let storage = ACMEStorage(root: "/s")
        #expect(DomainLock.account(storage: storage).path == "/s/account/lock")
    }

    /// An instance that died holding the lock blocks others only until
    /// the expiry.
    @Test func expiredLockIsTakenOver() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        let a = try DomainLock.domain("customer.example", storage: storage, owner: "a", ttl: 60)
        let b = try DomainLock.domain("customer.example", storage: storage, owner: "b", ttl: 60)
        #expect(try a.acquire(now: now))
        #expect(try !b.acquire(now: now + 59))
        #expect(try b.acquire(now: now + 60))
        #expect(try b.currentOwner() == "b")
        #expect(mode(b.path) == 0o600)
        // The old owner finds out when it refreshes, and cannot release.
        #expect(try !a.refresh(now: now + 61))
        #expect(a.expiry == nil)
        try a.release(now: now + 61)
        #expect(try b.currentOwner() == "b")
        // No temporary files left behind by the takeover.
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path + "/certificates/customer.example") == ["lock"])
    }

    @Test func refreshExtends() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        let a = try DomainLock.domain("customer.example", storage: storage, owner: "a", ttl: 60)
        let b = try DomainLock.domain("customer.example", storage: storage, owner: "b", ttl: 60)
        #expect(try a.acquire(now: now))
        #expect(try a.refresh(now: now + 50))
        #expect(a.expiry == now + 110)
        // Not expired at the first expiry any more.
        #expect(try !b.acquire(now: now + 100))
        // A refresh by one who does not hold it fails and takes nothing.
        #expect(try !b.refresh(now: now + 100))
        #expect(try a.currentOwner() == "a")
        #expect(mode(a.path) == 0o600)
    }

    @Test func releaseByNonOwnerDoesNothing() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        let a = try DomainLock.domain("customer.example", storage: storage, owner: "a")
        let b = try DomainLock.domain("customer.example", storage: storage, owner: "b")
        #expect(try a.acquire(now: now))
        try b.release(now: now)
        #expect(try a.currentOwner() == "a")
        // Releasing what nobody holds is fine too.
        try a.release(now: now)
        try a.release(now: now)
        try b.release(now: now)
    }

    /// Our own lock past its expiry stays on release: someone may be taking
    /// it over right now, and removing theirs would let a third in.
    @Test func expiredOwnLockIsNotRemoved() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        let a = try DomainLock.domain("customer.example", storage: storage, owner: "a", ttl: 60)
        #expect(try a.acquire(now: now))
        try a.release(now: now + 60)
        #expect(try a.currentOwner() == "a")
        #expect(try DomainLock.domain("customer.example", storage: storage, owner: "b", ttl: 60).acquire(now: now + 60))
    }

    /// Garbage (a crash between create and write, a stray file) is left
    /// alone while it is younger than the TTL by its mtime, then taken over.
    @Test func garbageFile() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let storage = ACMEStorage(root: scratch.path)
        let a = try DomainLock.domain("customer.example", storage: storage, owner: "a", ttl: 600)
        for garbage in ["", "not json", "{\"owner\": \"\", \"expires\": 99999999999}", "{\"owner\": 5}"] {
            try storage.write(Array(garbage.utf8), to: a.path)
            var times = [timeval(tv_sec: Int(now - 100), tv_usec: 0), timeval(tv_sec: Int(now - 100), tv_usec: 0)]
            #expect(utimes(a.path, &times) == 0)
            #expect(try a.currentOwner() == nil)
            #expect(try !a.acquire(now: now), "\(garbage)")
            #expect(try a.acquire(now: now + 500), "\(garbage)")
            #expect(try a.currentOwner() == "a")
            #expect(mode(a.path) == 0o600)
            try a.release(now: now + 500)
            #expect(try storage.read(a.path) == nil)
        }
    }

    @Test func badNamesRefused() throws {
        let storage = ACMEStorage(root: "/s")
        #expect(throws: ACMEError.self) { try DomainLock.domain("../x", storage: storage) }
    }
}
