#if canImport(Glibc)
import Glibc
#endif
import GatehouseConfig
import GatehouseLog

/// After the listeners are bound: a process started as root becomes `user`
/// (nginx's model, without a master that stays root). Under systemd the unit
/// already runs as `gatehouse` with CAP_NET_BIND_SERVICE, and this does nothing.
enum Privileges {
    /// `handOver`: directories made while root that the process writes
    /// later as `user` (ACME storage, created 0700 by the configuration
    /// loader): given to `user` when root owns them.
    static func drop(_ settings: PrivilegeSettings, mainFile: String, handOver: [String] = []) throws(StartupError) {
        guard geteuid() == 0 else {
            if let user = settings.user {
                Log.warning("\(mainFile): user: \"\(user)\" ignored: not started as root")
            }
            return
        }
        guard let user = settings.user else {
            if settings.allowRoot {
                Log.warning("running as root (allow_root = true)")
                return
            }
            throw StartupError(description: "\(mainFile): refusing to run as root: set user = \"gatehouse\" (or allow_root = true)")
        }
        guard let pw = getpwnam(user) else {
            throw StartupError(description: "\(mainFile): user: no such user \"\(user)\"")
        }
        var gid = pw.pointee.pw_gid
        let uid = pw.pointee.pw_uid
        if let group = settings.group {
            guard let gr = getgrnam(group) else {
                throw StartupError(description: "\(mainFile): group: no such group \"\(group)\"")
            }
            gid = gr.pointee.gr_gid
        }
        guard uid != 0 else {
            throw StartupError(description: "\(mainFile): user: \"\(user)\" is root; name an unprivileged user")
        }
        for path in handOver {
            var st = stat()
            guard stat(path, &st) == 0, st.st_uid == 0 else { continue }
            // Only a directory that holds nothing but ACME storage: never,
            // say, /etc/gatehouse named by mistake.
            let foreign = directoryEntries(path).filter { !["account", "certificates", "challenges"].contains($0) }
            guard foreign.isEmpty else {
                Log.warning("\(mainFile): acme storage \(path) belongs to root and holds \(foreign.prefix(3).joined(separator: ", ")): "
                            + "not handed to \"\(user)\"; give it to that user yourself")
                continue
            }
            guard chown(path, uid, gid) == 0 else {
                throw StartupError(description: "\(mainFile): cannot give \(path) to user \"\(user)\": \(String(cString: strerror(errno)))")
            }
        }
        // Order matters: supplementary groups and gid while still root, uid last.
        guard setgroups(0, nil) == 0, setgid(gid) == 0, setuid(uid) == 0 else {
            throw StartupError(description: "cannot switch to user \"\(user)\": \(String(cString: strerror(errno)))")
        }
        // Paranoia: regaining root must be impossible now.
        guard setuid(0) != 0 else {
            throw StartupError(description: "switched to \"\(user)\" but could regain root; refusing to continue")
        }
        Log.info("running as user \(user) (uid \(uid), gid \(gid))")
    }

    private static func directoryEntries(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
