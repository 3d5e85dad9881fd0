import BerthLinux
import BerthModel
import BerthTemplate
import FoundationEssentials

/// The rows docker's list commands format: each a context whose fields are
/// the columns (`{{.ID}}`, `{{.Names}}`…), with the header each column has
/// in a table and the command's default table.
struct DockerRows {
    var defaultTable: String
    var header: [(String, String)]
    var rows: [TemplateValue]

    /// Prints the rows in `format` (nil: the default table).
    ///
    /// - Throws: `BerthError.invalidArgument` for a template that does not
    ///   parse or cannot run on a row.
    func print(_ format: String?) throws {
        let text = try Templating.checked {
            let parsed = try DockerFormat(format, defaultTable: defaultTable)
            let headerObject = TemplateValue.object(
                TemplateObject(
                    typeName: "formatter.SubHeaderContext", fields: header.map { ($0.0, .string($0.1)) },
                    methods: ["Label": TemplateFunction { args in .string(Self.labelHeader(args)) }]))
            return try parsed.render(rows, header: headerObject)
        }
        Console.write(Descriptor.standardOutput, Array(text.utf8))
    }

    /// A `{{.Label "com.example.tier"}}` column's header: the key's last
    /// part, `-` and `_` as spaces (docker's).
    static func labelHeader(_ args: [TemplateValue]) -> String {
        guard case .string(let key)? = args.first else { return "" }
        return String(key.split(separator: ".").last ?? "").map { $0 == "-" || $0 == "_" ? " " : String($0) }.joined()
    }

    /// A context: these fields, `Label KEY` on these labels.
    static func context(_ typeName: String, _ fields: [(String, String)], labels: [String: String]) -> TemplateValue {
        .object(
            TemplateObject(
                typeName: typeName, fields: fields.map { ($0.0, .string($0.1)) },
                methods: [
                    "Label": TemplateFunction { args in
                        guard args.count == 1, case .string(let key) = args[0] else { throw TemplateError("wrong number of args for Label: want 1 got \(args.count)") }
                        return .string(labels[key] ?? "")
                    }
                ], encodesAsMap: true))
    }

    /// `k=v,k=v`, sorted as docker's ps sorts them.
    static func labels(_ labels: [String: String]) -> String {
        labels.keys.sorted().map { "\($0)=\(labels[$0]!)" }.joined(separator: ",")
    }

    /// Go's `time.Time.String()` of a UTC time: `2026-12-07 22:38:48 +0000 UTC`.
    static func goTime(_ date: Date) -> String {
        let text = RFC3339.format(Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down)))
        return String(text.dropLast()).replacing("T", with: " ") + " +0000 UTC"
    }

    /// The repository part of a reference (`busybox`, `registry:5000/app`).
    static func repository(_ r: ImageReference) -> String {
        var familiar = r.familiar
        if let digest = r.digest { familiar = String(familiar.dropLast(digest.count + 1)) }
        if let tag = r.tag { familiar = String(familiar.dropLast(tag.count + 1)) }
        return familiar
    }

    // MARK: The commands' rows

    /// `ps`.
    static func containers(_ containers: [Container], truncate: Bool) -> DockerRows {
        let rows = containers.map { c in
            let command = (c.admitted?.command ?? ((c.spec.entrypoint ?? []) + c.spec.command)).map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
            let mounts = c.spec.mounts.filter { $0.kind != .tmpfs }.map { m in truncate ? Human.truncate(m.source, 15) : m.source }
            let networks = c.endpoints.isEmpty ? [c.spec.network] : c.endpoints.map(\.networkName)
            return context(
                "*formatter.ContainerContext",
                [
                    ("ID", truncate ? c.id.short : c.id.rawValue), ("Names", c.name), ("Image", c.spec.image),
                    ("Command", TemplateValue.quoted(truncate ? Human.truncate(command, 20) : command, escapeHTML: false)),
                    ("CreatedAt", goTime(c.status.createdAt)), ("RunningFor", Human.ago(c.status.createdAt)),
                    ("Ports", c.publishedPorts.map { "\($0.hostIP?.description ?? "0.0.0.0"):\($0.hostPort)->\($0.containerPort)/\($0.transport.rawValue)" }.joined(separator: ", ")),
                    ("State", c.status.state.rawValue), ("Status", Human.status(c.status)), ("Size", "0B"), ("Labels", labels(c.spec.labels)),
                    ("Mounts", mounts.joined(separator: ",")), ("LocalVolumes", String(c.spec.mounts.filter { $0.kind == .volume }.count)),
                    ("Networks", networks.joined(separator: ",")),
                ], labels: c.spec.labels)
        }
        return DockerRows(
            defaultTable: #"{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"#,
            header: [
                ("ID", "CONTAINER ID"), ("Names", "NAMES"), ("Image", "IMAGE"), ("Command", "COMMAND"), ("CreatedAt", "CREATED AT"), ("RunningFor", "CREATED"),
                ("Ports", "PORTS"), ("State", "STATE"), ("Status", "STATUS"), ("Size", "SIZE"), ("Labels", "LABELS"), ("Mounts", "MOUNTS"),
                ("LocalVolumes", "LOCAL VOLUMES"), ("Networks", "NETWORKS"),
            ], rows: rows)
    }

    /// `images`: one row per name (`<none>` for an image without one).
    static func images(_ images: [Image], truncate: Bool, digests: Bool) -> DockerRows {
        var rows: [TemplateValue] = []
        for image in images {
            let references = image.names.compactMap { try? ImageReference(parsing: $0) }
            let names: [(String, String)] = references.isEmpty ? [("<none>", "<none>")] : references.map { (repository($0), $0.tag ?? "<none>") }
            for (repository, tag) in names {
                let size = Human.size(image.sizeBytes)
                rows.append(
                    context(
                        "*formatter.imageContext",
                        [
                            ("Repository", repository), ("Tag", tag), ("Digest", image.digest.isEmpty ? "<none>" : image.digest),
                            ("ID", truncate ? image.shortID : image.id), ("CreatedSince", Human.ago(image.createdAt)), ("CreatedAt", goTime(image.createdAt)),
                            ("Size", size), ("Containers", "N/A"), ("VirtualSize", size), ("SharedSize", "N/A"), ("UniqueSize", "N/A"),
                        ], labels: image.config.labels))
            }
        }
        let digest = digests ? #"\t{{.Digest}}"# : ""
        return DockerRows(
            defaultTable: #"{{.Repository}}\t{{.Tag}}"# + digest + #"\t{{.ID}}\t{{if .CreatedSince }}{{.CreatedSince}}{{else}}N/A{{end}}\t{{.Size}}"#,
            header: [
                ("Repository", "REPOSITORY"), ("Tag", "TAG"), ("Digest", "DIGEST"), ("ID", "IMAGE ID"), ("CreatedSince", "CREATED"), ("CreatedAt", "CREATED AT"),
                ("Size", "SIZE"), ("Containers", "CONTAINERS"), ("VirtualSize", "SIZE"), ("SharedSize", "SHARED SIZE"), ("UniqueSize", "UNIQUE SIZE"),
            ], rows: rows)
    }

    /// `network ls`.
    static func networks(_ networks: [NetworkView], truncate: Bool) -> DockerRows {
        let rows = networks.sorted { $0.name < $1.name }.map { n in
            context(
                "*formatter.networkContext",
                [
                    ("ID", truncate ? String(n.id.prefix(12)) : n.id), ("Name", n.name), ("Driver", n.driver), ("Scope", n.driver == "overlay" ? "swarm" : "local"),
                    ("IPv6", "false"), ("Internal", n.internal ? "true" : "false"), ("Labels", labels(n.labels)), ("CreatedAt", goTime(n.createdAt)),
                    ("Subnet", n.subnet),
                ], labels: n.labels)
        }
        return DockerRows(
            defaultTable: #"{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"#,
            header: [
                ("ID", "NETWORK ID"), ("Name", "NAME"), ("Driver", "DRIVER"), ("Scope", "SCOPE"), ("IPv6", "IPV6"), ("Internal", "INTERNAL"),
                ("Labels", "LABELS"), ("CreatedAt", "CREATED AT"), ("Subnet", "SUBNET"),
            ], rows: rows)
    }

    /// `stats`: one row per container.
    static func stats(_ rows: [StatsRow], truncate: Bool) -> DockerRows {
        let contexts = rows.map { r in
            context(
                "*formatter.statsContext",
                [
                    ("Container", r.name), ("Name", r.name), ("ID", truncate ? String(r.id.prefix(12)) : r.id), ("CPUPerc", Human.percent(r.cpuPercent)),
                    ("MemUsage", Human.binarySize(r.memoryUsage) + " / " + Human.binarySize(r.memoryLimit)), ("MemPerc", Human.percent(r.memoryPercent)),
                    ("NetIO", Human.size(Int64(r.netRx)) + " / " + Human.size(Int64(r.netTx))),
                    ("BlockIO", Human.size(Int64(r.blockRead)) + " / " + Human.size(Int64(r.blockWrite))), ("PIDs", String(r.pids)),
                ], labels: [:])
        }
        return DockerRows(
            defaultTable: #"{{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"#,
            header: [
                ("Container", "CONTAINER"), ("Name", "NAME"), ("ID", "CONTAINER ID"), ("CPUPerc", "CPU %"), ("MemUsage", "MEM USAGE / LIMIT"),
                ("MemPerc", "MEM %"), ("NetIO", "NET I/O"), ("BlockIO", "BLOCK I/O"), ("PIDs", "PIDS"),
            ], rows: contexts)
    }

    /// `volume ls`.
    static func volumes(_ volumes: [VolumeView]) -> DockerRows {
        let rows = volumes.sorted { $0.name < $1.name }.map { v in
            context(
                "*formatter.volumeContext",
                [
                    ("Name", v.name), ("Driver", v.driver), ("Scope", "local"), ("Mountpoint", v.mountpoint), ("Labels", labels(v.labels)),
                    ("Links", String(v.usedBy.count)), ("Size", "N/A"),
                ], labels: v.labels)
        }
        return DockerRows(
            defaultTable: #"{{.Driver}}\t{{.Name}}"#,
            header: [
                ("Name", "VOLUME NAME"), ("Driver", "DRIVER"), ("Scope", "SCOPE"), ("Mountpoint", "MOUNTPOINT"), ("Labels", "LABELS"), ("Links", "LINKS"),
                ("Size", "SIZE"),
            ], rows: rows)
    }
}
