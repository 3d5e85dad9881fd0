/// A filesystem mounted into a container.
public struct Mount: Codable, Sendable, Hashable {
    /// What backs the mount.
    public enum Kind: String, Codable, Sendable, Hashable, CaseIterable {
        /// A named (or anonymous) volume managed by the agent.
        case volume
        /// A path on the host.
        case bind
        /// A memory-backed filesystem.
        case tmpfs
    }

    public var kind: Kind
    /// The volume name or the host path; empty for tmpfs and anonymous volumes.
    public var source: String
    /// The absolute path inside the container.
    public var target: String
    public var readOnly: Bool
    /// Size cap for tmpfs mounts.
    public var tmpfsSize: ByteSize?

    public init(kind: Kind, source: String = "", target: String, readOnly: Bool = false, tmpfsSize: ByteSize? = nil) {
        self.kind = kind
        self.source = source
        self.target = target
        self.readOnly = readOnly
        self.tmpfsSize = tmpfsSize
    }

    /// Parses docker's `-v` syntax: `NAME:/path[:ro|rw]`, `/host:/path[:ro|rw]`,
    /// or `/path` (an anonymous volume).
    ///
    /// - Throws: `BerthError.invalidArgument` naming what is wrong.
    public init(parsingVolume text: String) throws {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        let expected = "expected NAME:/path[:ro], /host/path:/path[:ro] or /path"
        var readOnly = false
        var fields = parts
        if fields.count == 3 || (fields.count == 2 && !fields[1].hasPrefix("/")) {
            switch fields.removeLast() {
            case "ro": readOnly = true
            case "rw": readOnly = false
            default: throw BerthError.invalid("volume \"\(text)\": the mode must be ro or rw; \(expected)")
            }
        }
        switch fields.count {
        case 1:
            try Mount.checkTarget(fields[0], in: text)
            self.init(kind: .volume, source: "", target: fields[0], readOnly: readOnly)
        case 2:
            try Mount.checkTarget(fields[1], in: text)
            let source = fields[0]
            if source.hasPrefix("/") {
                self.init(kind: .bind, source: source, target: fields[1], readOnly: readOnly)
            } else {
                try VolumeName.validate(source)
                self.init(kind: .volume, source: source, target: fields[1], readOnly: readOnly)
            }
        default:
            throw BerthError.invalid("volume \"\(text)\": \(expected)")
        }
    }

    /// Parses `--tmpfs /path[:size=64m]`.
    public init(parsingTmpfs text: String) throws {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard let target = parts.first else { throw BerthError.invalid("tmpfs \"\(text)\": expected /path[:size=64m]") }
        try Mount.checkTarget(target, in: text)
        var size: ByteSize?
        var readOnly = false
        if parts.count == 2 {
            for option in parts[1].split(separator: ",") {
                if option.hasPrefix("size=") {
                    size = try ByteSize(parsing: String(option.dropFirst(5)), for: "tmpfs size")
                } else if option == "ro" {
                    readOnly = true
                } else if option == "rw" {
                    readOnly = false
                } else {
                    throw BerthError.invalid("tmpfs \"\(text)\": unknown option \"\(option)\"; expected size=N, ro or rw")
                }
            }
        }
        self.init(kind: .tmpfs, target: target, readOnly: readOnly, tmpfsSize: size)
    }

    /// Parses docker's `--mount type=volume|bind|tmpfs,source=…,target=…[,readonly][,tmpfs-size=…]`
    /// (`src`/`dst`/`destination` and `ro` too).
    public init(parsingMount text: String) throws {
        var fields: [String: String] = [:]
        var readOnly = false
        for item in text.split(separator: ",") {
            let pair = item.split(separator: "=", maxSplits: 1).map(String.init)
            let key = pair[0].lowercased()
            if pair.count == 1 {
                guard key == "readonly" || key == "ro" else {
                    throw BerthError.invalid("mount \"\(text)\": \"\(key)\" needs a value")
                }
                readOnly = true
                continue
            }
            switch key {
            case "type": fields["type"] = pair[1]
            case "source", "src": fields["source"] = pair[1]
            case "target", "dst", "destination": fields["target"] = pair[1]
            case "readonly", "ro":
                guard let value = ["true": true, "1": true, "false": false, "0": false][pair[1].lowercased()] else {
                    throw BerthError.invalid("mount \"\(text)\": readonly=\(pair[1]) must be true or false")
                }
                readOnly = value
            case "tmpfs-size": fields["size"] = pair[1]
            case "volume-nocopy", "bind-propagation", "tmpfs-mode", "consistency":
                throw BerthError.invalid("mount \"\(text)\": the option \(key) is not supported")
            default:
                throw BerthError.invalid("mount \"\(text)\": unknown key \"\(key)\"")
            }
        }
        guard let target = fields["target"] else { throw BerthError.invalid("mount \"\(text)\": target= is required") }
        try Mount.checkTarget(target, in: text)
        let source = fields["source"] ?? ""
        switch fields["type"] ?? "volume" {
        case "volume":
            if !source.isEmpty { try VolumeName.validate(source) }
            self.init(kind: .volume, source: source, target: target, readOnly: readOnly)
        case "bind":
            guard source.hasPrefix("/") else { throw BerthError.invalid("mount \"\(text)\": a bind needs an absolute source= on the host") }
            self.init(kind: .bind, source: source, target: target, readOnly: readOnly)
        case "tmpfs":
            guard source.isEmpty else { throw BerthError.invalid("mount \"\(text)\": a tmpfs has no source") }
            let size = try fields["size"].map { try ByteSize(parsing: $0, for: "tmpfs-size") }
            self.init(kind: .tmpfs, target: target, readOnly: readOnly, tmpfsSize: size)
        case let other:
            throw BerthError.invalid("mount \"\(text)\": type \"\(other)\" is not one of volume, bind, tmpfs")
        }
        if fields["size"] != nil && kind != .tmpfs { throw BerthError.invalid("mount \"\(text)\": tmpfs-size is for tmpfs mounts") }
    }

    /// Throws unless `target` is an absolute container path without `..`.
    public static func checkTarget(_ target: String, in text: String) throws {
        guard target.hasPrefix("/") else {
            throw BerthError.invalid("mount \"\(text)\": the container path \"\(target)\" must be absolute")
        }
        guard !target.split(separator: "/").contains("..") else {
            throw BerthError.invalid("mount \"\(text)\": the container path must not contain \"..\"")
        }
    }
}

/// Rules for volume names, as docker has them.
public enum VolumeName {
    /// Throws unless the name starts with a letter or digit and has only
    /// letters, digits, `_`, `.` and `-`.
    public static func validate(_ name: String) throws {
        guard ObjectName.isValid(name, minimumLength: 1) else {
            throw BerthError.invalid(
                "volume name \"\(name)\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        }
    }
}
