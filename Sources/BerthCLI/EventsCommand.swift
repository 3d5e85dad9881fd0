import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import BerthTemplate
import FoundationEssentials
import GRPCCore
import SwiftProtobuf

/// `berth events`: the agent's event log, replayed from a revision and then
/// followed, one line per event (docker's layout, with the revision).
struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Show events: those after a revision, then new ones as they happen.")

    @OptionGroup var agent: AgentOptions
    @Option(
        help:
            "Replay first the events since a time (RFC 3339, a date, Unix seconds, or a duration before now like 10m), or after a revision (r12; r0 from the oldest kept). Without it, only new events."
    )
    var since: String?
    @Option(help: "Stop at this time (as --since takes it): past events up to it, then live ones until it comes.")
    var until: String?
    @Option(name: .customLong("filter"), help: "KEY=VALUE, repeatable: type=container|image|…, container=NAME|ID, image=NAME|ID, event=ACTION.")
    var filters: [String] = []
    @Option(
        help: "A Go template ('{{.Type}} {{.Action}} {{.Actor.ID}}'), json (docker's message, one per line, with Berth's revision), or the default line per event."
    )
    var format: String?

    func run() async throws {
        let format = self.format
        let template = try Templating.checked {
            try DockerFormat.validate(format)
            return try format.flatMap { $0 == "json" ? nil : try Template(DockerFormat.unescaped($0)) }
        }
        var grouped: [(key: String, values: [String])] = []
        for filter in filters {
            let parts = filter.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw BerthError.invalid("--filter \"\(filter)\": expected KEY=VALUE") }
            if let i = grouped.firstIndex(where: { $0.key == parts[0] }) {
                grouped[i].values.append(parts[1])
            } else {
                grouped.append((parts[0], [parts[1]]))
            }
        }
        let now = Date()
        let from = try since.map { try EventsCommand.start(parsing: $0, now: now) }
        let untilDate = try until.map { try TimeText.date(parsing: $0, for: "--until", now: now) }
        let sinceDate = from?.date
        // A window that ends in the past replays it; one that ends later stops then.
        let replay = from != nil || untilDate != nil
        let request = Berth_Agent_V1_WatchEventsRequest.with {
            $0.fromRevision = from?.revision ?? 0
            $0.liveOnly = !replay
            $0.replayOnly = untilDate.map { $0 <= now } ?? false
            $0.filters = grouped.map { group in .with { $0.key = group.key; $0.values = group.values } }
        }
        var unlimited = CallOptions.defaults
        unlimited.timeout = nil
        let options = unlimited
        let stopper = untilDate.flatMap { until in
            until <= now ? nil : Task {
                try await Task.sleep(for: .seconds(max(0, until.timeIntervalSinceNow)))
                Processes.exit(0)
            }
        }
        defer { stopper?.cancel() }
        try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Events.Client(wrapping: grpc).watch(request, options: options) { response in
                for try await message in response.messages {
                    let event = try Event(proto: message.event)
                    if let sinceDate, event.time < sinceDate { continue }
                    if let untilDate, event.time > untilDate { return }
                    if format == "json" {
                        Console.print(Self.shape(event).json(escapeHTML: false))
                    } else if let template {
                        do {
                            Console.print(try template.execute(Self.shape(event)))
                        } catch let error as TemplateError {
                            throw BerthError.invalid("template parsing error: \(error.message)")
                        }
                    } else {
                        Console.print(Self.line(event))
                    }
                }
            }
        }
    }

    /// Where `--since` starts: a revision (`r12`, or a bare number below a
    /// billion, as earlier releases took it), or a time (all events are
    /// read and those before it skipped).
    static func start(parsing text: String, now: Date) throws -> (revision: UInt64, date: Date?) {
        if text.hasPrefix("r"), let revision = UInt64(text.dropFirst()) { return (revision, nil) }
        if let revision = UInt64(text), revision < 1_000_000_000 { return (revision, nil) }
        return (0, try TimeText.date(parsing: text, for: "--since", now: now))
    }

    /// docker's event message (`events.Message`), and Berth's revision.
    static func shape(_ event: Event) -> TemplateValue {
        let nanos = Int64((event.time.timeIntervalSince1970 * 1e9).rounded())
        let legacy = event.type.rawValue == "container" || event.type.rawValue == "image"
        return .object(
            "events.Message",
            [
                "status": .string(legacy ? event.action.rawValue : ""), "id": .string(legacy ? event.actorID : ""),
                "from": .string(event.type.rawValue == "container" ? event.attributes["image"] ?? "" : ""),
                "Type": .string(event.type.rawValue), "Action": .string(event.action.rawValue),
                "Actor": .object("events.Actor", ["ID": .string(event.actorID), "Attributes": .strings(event.attributes)]),
                "scope": .string("local"), "time": .int(nanos / 1_000_000_000), "timeNano": .int(nanos), "revision": .integer(event.revision),
            ],
            aliases: ["Status": "status", "ID": "id", "From": "from", "Scope": "scope", "Time": "time", "TimeNano": "timeNano", "Revision": "revision"],
            omitEmpty: ["status", "id", "from", "scope", "time", "timeNano"])
    }

    /// `2026-11-29T05:00:00.123456789Z container start 3f2a… (image=busybox, name=web) revision=12`
    static func line(_ event: Event) -> String {
        let attributes = event.attributes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
        return "\(RFC3339.format(event.time)) \(event.type.rawValue) \(event.action) \(event.actorID)"
            + (attributes.isEmpty ? "" : " (\(attributes))") + " revision=\(event.revision)"
    }
}
