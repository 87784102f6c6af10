#if canImport(Glibc)
import Glibc
#endif
@testable import GatehouseConfig

/// A mkdtemp directory for one test; `remove()` deletes it recursively.
struct TempDir {
    let path: String

    init() {
        var template = Array("/tmp/gatehouse-config-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Writes `text` to `relative`, creating intermediate directories.
    @discardableResult
    func write(_ relative: String, _ text: String) -> String {
        let full = path + "/" + relative
        var dir = ""
        for part in relative.split(separator: "/").dropLast() {
            dir += "/" + part
            mkdir(path + dir, 0o755)
        }
        let fd = open(full, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        precondition(fd >= 0, "open \(full) failed")
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { buf in
            var off = 0
            while off < buf.count {
                let n = Glibc.write(fd, buf.baseAddress! + off, buf.count - off)
                precondition(n > 0)
                off += n
            }
        }
        close(fd)
        return full
    }

    func mkdirs(_ relative: String) {
        var dir = ""
        for part in relative.split(separator: "/") {
            dir += "/" + part
            mkdir(path + dir, 0o755)
        }
    }

    func remove() { TempDir.removeTree(path) }

    static func removeTree(_ path: String) {
        if let d = opendir(path) {
            var children: [String] = []
            while let e = readdir(d) {
                let name = withUnsafePointer(to: &e.pointee.d_name) {
                    $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
                }
                if name != "." && name != ".." { children.append(path + "/" + name) }
            }
            closedir(d)
            for child in children {
                var st = stat()
                if lstat(child, &st) == 0, st.st_mode & S_IFMT == S_IFDIR {
                    removeTree(child)
                } else {
                    unlink(child)
                }
            }
        }
        rmdir(path)
    }
}

enum Fixtures {
    static let main = """
        domains_dir = "domains.d"
        [[listener]]
        address = "127.0.0.1:8443"
        protocol = "https"

        """

    static let domain = """
        names = ["example.com"]
        backend = "127.0.0.1:8000"
        certificate = "cert.pem"
        key = "key.pem"

        """
}

/// Runs the loader on a temp tree: `main` as gatehouse.toml, each `domains` entry as
/// domains.d/<name>. Returns the snapshot or the errors.
func loadTree(
    main: String = Fixtures.main,
    domains: [(String, String)] = [("example.toml", Fixtures.domain)],
    createDomainsDir: Bool = true
) -> (dir: String, result: Result<ConfigSnapshot, ConfigErrors>) {
    let tmp = TempDir()
    defer { tmp.remove() }
    tmp.write("gatehouse.toml", main)
    if createDomainsDir { tmp.mkdirs("domains.d") }
    for (name, text) in domains { tmp.write("domains.d/" + name, text) }
    do {
        return (tmp.path, .success(try ConfigLoader.load(path: tmp.path + "/gatehouse.toml")))
    } catch {
        return (tmp.path, .failure(error))
    }
}
