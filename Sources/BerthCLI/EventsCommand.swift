import ArgumentParser
import BerthAPI
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
    @Option(help: "Replay the events after this revision first (0: from the oldest kept). Without it, only new events.")
    var since: UInt64?
    @Option(name: .customLong("filter"), help: "KEY=VALUE, repeatable: type=container|image|…, container=NAME|ID, image=NAME|ID, event=ACTION.")
    var filters: [String] = []
    @Option(
        help: "A Go template ('{{.Type}} {{.Action}} {{.Actor.ID}}'), json (docker's message, one per line, with Berth's revision), or the default line per event."
    )
    var format: String?

    func run() async throws {
        let template: Template?
        do {
            try DockerFormat.validate(format)
            template = try format.flatMap { $0 == "json" ? nil : try Template(DockerFormat.unescaped($0)) }
        } catch let error as TemplateError {
            throw BerthError.invalid(error.message)
        }
        let format = self.format
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
        let request = Berth_Agent_V1_WatchEventsRequest.with {
            $0.fromRevision = since ?? 0
            $0.liveOnly = since == nil
            $0.filters = grouped.map { group in .with { $0.key = group.key; $0.values = group.values } }
        }
        var unlimited = CallOptions.defaults
        unlimited.timeout = nil
        let options = unlimited
        try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Events.Client(wrapping: grpc).watch(request, options: options) { response in
                for try await message in response.messages {
                    let event = try Event(proto: message.event)
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
