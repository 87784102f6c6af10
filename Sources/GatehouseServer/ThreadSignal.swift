#if canImport(Glibc)
import Glibc
#endif
import CShims

/// A counting semaphore for threads that sleep until woken or a deadline:
/// the ACME threads. (The event loops never wait on one.)
final class ThreadSignal: @unchecked Sendable {
    // @unchecked: sem_t is made for sharing between threads; it needs a
    // stable address, hence the allocation.
    private let semaphore: UnsafeMutablePointer<sem_t>

    init() {
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    func signal() {
        sem_post(semaphore)
    }

    /// Returns when signalled or after `seconds` (a spurious return is fine:
    /// callers look at their state again).
    func wait(seconds: Double) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let wait = max(0, min(seconds, 86_400))
        var deadline = timespec(tv_sec: now.tv_sec + Int(wait), tv_nsec: now.tv_nsec + Int((wait - wait.rounded(.down)) * 1e9))
        if deadline.tv_nsec >= 1_000_000_000 {
            deadline.tv_sec += 1
            deadline.tv_nsec -= 1_000_000_000
        }
        while sem_timedwait(semaphore, &deadline) != 0 && errno == EINTR {}
    }
}

/// A joinable thread running one closure.
final class JoinableThread: @unchecked Sendable {
    // @unchecked: the handle is written once, by start, before anyone joins.
    private var handle = pthread_t()
    private let body: () -> Void
    private let niceness: Int32

    /// `niceness`: raised for background work (ACME), so that on a busy
    /// machine the event loops get the CPU first. Linux applies it to the
    /// calling thread alone.
    init(niceness: Int32 = 0, _ body: @escaping () -> Void) {
        self.body = body
        self.niceness = niceness
        let context = Unmanaged.passRetained(self).toOpaque()
        if pthread_create(&handle, nil, { arg in
            let thread = Unmanaged<JoinableThread>.fromOpaque(arg!).takeRetainedValue()
            if thread.niceness != 0 { _ = gh_nice_this_thread(thread.niceness) }
            thread.body()
            return nil
        }, context) != 0 {
            Unmanaged<JoinableThread>.fromOpaque(context).release()
            fatalError("cannot start a thread")
        }
    }

    func join() {
        pthread_join(handle, nil)
    }
}
