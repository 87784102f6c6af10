#if canImport(Glibc)
import Glibc
#endif

/// The few file-system operations the loader needs, on Glibc directly: config loading is
/// rare and small, and this keeps Foundation out of the server binary's startup path.
enum FileSystem {
    /// Domain and main files are a few hundred bytes; a cap turns a mistaken path
    /// (a log, a device) into an error instead of a huge read.
    static let maxFileSize = 1 << 20

    enum Kind { case missing, directory, file, other }

    /// Follows symlinks, so linked domain files ("sites-enabled" style) work.
    static func kind(_ path: String) -> Kind {
        var st = stat()
        guard stat(path, &st) == 0 else { return .missing }
        switch st.st_mode & S_IFMT {
        case S_IFDIR: return .directory
        case S_IFREG: return .file
        default: return .other
        }
    }

    static func readFile(_ path: String) -> Result<[UInt8], Message> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(Message("cannot open: \(errorText())")) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return .failure(Message("cannot stat: \(errorText())")) }
        guard st.st_mode & S_IFMT == S_IFREG else { return .failure("not a regular file") }
        guard Int(st.st_size) <= maxFileSize else { return .failure("file larger than 1 MiB") }

        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(Message("cannot read: \(errorText())"))
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0 ..< n])
            if bytes.count > maxFileSize { return .failure("file larger than 1 MiB") }
        }
        return .success(bytes)
    }

    /// Names of regular files (or links to them) in `dir` ending in `suffix`, byte-wise
    /// sorted so domain ids are stable across loads. Hidden files are skipped, as a shell
    /// glob would, which also ignores editor lock files like ".#example.toml".
    static func listFiles(_ dir: String, suffix: String) -> Result<[String], Message> {
        guard let handle = opendir(dir) else { return .failure(Message("cannot open directory: \(errorText())")) }
        defer { closedir(handle) }
        var names: [String] = []
        while true {
            errno = 0
            guard let entry = readdir(handle) else {
                if errno != 0 { return .failure(Message("cannot read directory: \(errorText())")) }
                break
            }
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            guard !name.hasPrefix("."), name.hasSuffix(suffix), name.utf8.count > suffix.utf8.count else { continue }
            if kind(join(dir, name)) == .file { names.append(name) }
        }
        names.sort { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        return .success(names)
    }

    /// Creates `path` and any missing parents (0700: it will hold private
    /// keys), then proves it writable by creating and removing a file, which
    /// also catches read-only mounts and NFS root squashing that access(2)
    /// cannot see.
    static func ensureWritableDirectory(_ path: String) -> Result<Void, Message> {
        var partial = ""
        for part in path.split(separator: "/") {
            partial += "/" + part
            switch kind(partial) {
            case .directory: continue
            case .file, .other: return .failure(Message("cannot create directory: \"\(partial)\" is not a directory"))
            case .missing:
                if mkdir(partial, 0o700) != 0 && errno != EEXIST {
                    return .failure(Message("cannot create directory \"\(partial)\": \(errorText())"))
                }
            }
        }
        guard kind(path) == .directory else { return .failure("not a directory") }
        let probe = join(path, ".gatehouse-write-test.\(getpid())")
        let fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return .failure(Message("directory is not writable: \(errorText())")) }
        close(fd)
        unlink(probe)
        return .success(())
    }

    /// A regular file this process can open for reading.
    static func readableFile(_ path: String) -> Result<Void, Message> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(Message("cannot open: \(errorText())")) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return .failure("not a regular file") }
        return .success(())
    }

    static func errorText() -> String {
        String(cString: strerror(errno))
    }

    static func currentDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return "/" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Lexically absolute: `path` if absolute, else joined to `base`; "." and ".." and
    /// repeated slashes are collapsed. Symlinks are left alone so paths in error
    /// messages are the ones the operator wrote.
    static func absolute(_ path: String, relativeTo base: String) -> String {
        normalize(path.hasPrefix("/") ? path : join(base, path))
    }

    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..": if !parts.isEmpty { parts.removeLast() }
            default: parts.append(part)
            }
        }
        return "/" + parts.joined(separator: "/")
    }

    static func join(_ dir: String, _ name: String) -> String {
        dir.hasSuffix("/") ? dir + name : dir + "/" + name
    }

    /// Everything before the last "/" ("/" for top-level files).
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let dir = path[..<slash]
        return dir.isEmpty ? "/" : String(dir)
    }
}

/// Identity and version of a file (device, inode, size, mtime): a reload
/// reuses a domain file, or a loaded certificate, whose stamp is unchanged.
public struct FileStamp: Equatable, Sendable {
    var device: UInt64
    var inode: UInt64
    var size: Int64
    var seconds: Int64
    var nanoseconds: Int64

    /// nil when the file cannot be stat()ed.
    public init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        seconds = Int64(st.st_mtim.tv_sec)
        nanoseconds = Int64(st.st_mtim.tv_nsec)
    }
}
