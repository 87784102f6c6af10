import TOMLKit

/// Errors collected across every file of one load.
struct Diagnostics {
    var errors: [ConfigError] = []

    mutating func add(_ file: String, _ key: String?, _ message: String) {
        errors.append(ConfigError(file: file, key: key, message: message))
    }
}

/// Typed, error-reporting access to one TOML table. Every accessor returns nil both when
/// the key is absent and when it is invalid; invalid values (and missing required keys)
/// are recorded in `Diagnostics` under their dotted key path.
struct TOMLSection {
    let table: TOMLTable
    let file: String
    /// Key path of this table ("", "timeouts", "listener[0]").
    let path: String

    func keyPath(_ key: String) -> String {
        path.isEmpty ? key : "\(path).\(key)"
    }

    /// Typo protection: anything we do not know is an error, never silently ignored.
    func rejectUnknownKeys(allowed: Set<String>, _ diag: inout Diagnostics) {
        for key in table.keys.sorted() where !allowed.contains(key) {
            diag.add(file, keyPath(key), "unknown key")
        }
    }

    private func fetch(_ key: String, required: Bool, _ diag: inout Diagnostics) -> TOMLValueConvertible? {
        guard let value = table[key] else {
            if required { diag.add(file, keyPath(key), "missing required key") }
            return nil
        }
        return value
    }

    private func wrongType(_ key: String, _ expected: String, _ value: TOMLValueConvertible, _ diag: inout Diagnostics) {
        diag.add(file, keyPath(key), "expected \(expected), got \(value.type)")
    }

    func string(_ key: String, required: Bool = false, _ diag: inout Diagnostics) -> String? {
        guard let value = fetch(key, required: required, &diag) else { return nil }
        guard let s = value.string else { wrongType(key, "a string", value, &diag); return nil }
        return s
    }

    func int(_ key: String, required: Bool = false, _ diag: inout Diagnostics) -> Int? {
        guard let value = fetch(key, required: required, &diag) else { return nil }
        guard let i = value.int else { wrongType(key, "an integer", value, &diag); return nil }
        return i
    }

    /// Integer or float, for durations like `idle = 60` or `handshake = 2.5`.
    func number(_ key: String, required: Bool = false, _ diag: inout Diagnostics) -> Double? {
        guard let value = fetch(key, required: required, &diag) else { return nil }
        if let i = value.int { return Double(i) }
        guard let d = value.double else { wrongType(key, "a number", value, &diag); return nil }
        return d
    }

    func bool(_ key: String, required: Bool = false, _ diag: inout Diagnostics) -> Bool? {
        guard let value = fetch(key, required: required, &diag) else { return nil }
        guard let b = value.bool else { wrongType(key, "a boolean (true or false)", value, &diag); return nil }
        return b
    }

    func stringArray(_ key: String, required: Bool = false, _ diag: inout Diagnostics) -> [String]? {
        guard let value = fetch(key, required: required, &diag) else { return nil }
        guard let array = value.array else { wrongType(key, "an array of strings", value, &diag); return nil }
        var out: [String] = []
        for (i, element) in array.enumerated() {
            guard let s = element.string else {
                diag.add(file, keyPath(key), "expected an array of strings, element \(i) is \(element.type)")
                return nil
            }
            out.append(s)
        }
        return out
    }

    /// A string or an array of strings (`certificate = "a.pem"` or `["a.pem", "b.pem"]`).
    func stringOrArray(_ key: String, required: Bool = false, _ diag: inout Diagnostics) -> [String]? {
        guard let value = fetch(key, required: required, &diag) else { return nil }
        if let s = value.string { return [s] }
        guard value.array != nil else { wrongType(key, "a string or an array of strings", value, &diag); return nil }
        return stringArray(key, &diag)
    }

    func section(_ key: String, _ diag: inout Diagnostics) -> TOMLSection? {
        guard let value = fetch(key, required: false, &diag) else { return nil }
        guard let t = value.table else { wrongType(key, "a table ([\(key)])", value, &diag); return nil }
        return TOMLSection(table: t, file: file, path: keyPath(key))
    }

    /// `[[key]]` entries, each with path "key[i]".
    func sectionArray(_ key: String, _ diag: inout Diagnostics) -> [TOMLSection]? {
        guard let value = fetch(key, required: false, &diag) else { return nil }
        guard let array = value.array else {
            wrongType(key, "an array of tables ([[\(key)]])", value, &diag)
            return nil
        }
        var out: [TOMLSection] = []
        for (i, element) in array.enumerated() {
            guard let t = element.table else {
                diag.add(file, keyPath(key), "expected an array of tables ([[\(key)]]), element \(i) is \(element.type)")
                return nil
            }
            out.append(TOMLSection(table: t, file: file, path: "\(keyPath(key))[\(i)]"))
        }
        return out
    }
}
