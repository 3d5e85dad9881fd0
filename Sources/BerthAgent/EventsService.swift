import BerthAPI
import BerthModel
import BerthTransport
public import GRPCCore
import SwiftProtobuf

/// `berth.agent.v1.Events`: the event log, replayed from a revision and
/// then followed live. The log in the database is the only buffer: a
/// watcher reads it at its own pace, so a slow one never holds up the agent
/// and never misses an event while its revision is still kept.
public struct EventsService: Berth_Agent_V1_Events.SimpleServiceProtocol {
    let database: AgentDatabase
    /// Events read from the log per query.
    let page: Int
    let metrics: AgentMetrics?

    public init(database: AgentDatabase, page: Int = 1_000, metrics: AgentMetrics? = nil) {
        self.database = database
        self.page = page
        self.metrics = metrics
    }

    public func watch(
        request: Berth_Agent_V1_WatchEventsRequest, response: RPCWriter<Berth_Agent_V1_WatchEventsResponse>, context: ServerContext
    ) async throws {
        let filter = try EventFilter(request.filters.map { ($0.key, $0.values) })
        let bounds = try database.eventBounds()
        let start = request.liveOnly ? bounds.latest : request.fromRevision
        guard start <= bounds.latest else {
            throw BerthError(.outOfRange, "revision \(start) is in the future: the latest revision is \(bounds.latest)")
        }
        // From 0 the replay starts at the oldest event kept; after any other
        // revision, the next one must still be in the log.
        let gapless = request.liveOnly || request.fromRevision > 0
        let database = self.database
        let page = self.page
        do {
            try await untilRPCCancelled {
                try await Self.follow(
                    database: database, page: page, after: start, until: request.replayOnly ? bounds.latest : nil, gapless: gapless, filter: filter,
                    response: response)
            }
        } catch let error as BerthError where error.code == .failedPrecondition {
            metrics?.watchGapped()
            throw error
        }
    }

    private static func follow(
        database: AgentDatabase, page: Int, after start: UInt64, until: UInt64?, gapless: Bool, filter: EventFilter,
        response: RPCWriter<Berth_Agent_V1_WatchEventsResponse>
    ) async throws {
        var last = start
        var gapless = gapless
        while !Task.isCancelled {
            // A replay ends at the revision that was the latest when it began.
            if let until, last >= until { return }
            let generation = database.eventSignal.generation
            // Caught up: new events come from memory; behind: from the log.
            let events = try database.eventSignal.recent(after: last, limit: page) ?? database.events(after: last, limit: page)
            guard let first = events.first, let newest = events.last else {
                await database.eventSignal.wait(after: generation)
                continue
            }
            if gapless && first.revision > last + 1 {
                throw BerthError(
                    .failedPrecondition,
                    "revision \(last) is older than the event log keeps: the oldest revision kept is \(first.revision); watch from \(first.revision - 1) or later")
            }
            gapless = true
            let matching = events.filter { event in filter.matches(event) && (until.map { event.revision <= $0 } ?? true) }
            if !matching.isEmpty {
                try await response.write(contentsOf: matching.map { event in .with { $0.event = event.proto } })
            }
            last = newest.revision
        }
    }
}

/// docker's event filters: `type=container|image|volume|network|node`,
/// `container=NAME|ID`, `image=NAME|ID`, `event=ACTION` (or `action=`).
/// Values of one key are alternatives; different keys must all match.
struct EventFilter: Sendable {
    private var types: Set<String> = []
    private var actions: Set<String> = []
    private var containers: [String] = []
    private var images: [String] = []

    init(_ filters: [(key: String, values: [String])]) throws {
        for (key, values) in filters {
            switch key {
            case "type":
                for value in values where EventType(rawValue: value) == nil {
                    throw BerthError.invalid("filter type=\(value): expected container, image, volume, network or node")
                }
                types.formUnion(values)
            case "event", "action": actions.formUnion(values)
            case "container": containers += values
            case "image": images += values
            default: throw BerthError.invalid("filter \"\(key)\": supported filters are type, container, image and event")
            }
        }
    }

    func matches(_ event: Event) -> Bool {
        if !types.isEmpty && !types.contains(event.type.rawValue) { return false }
        // As docker: `event=health_status` matches `health_status: healthy`.
        if !actions.isEmpty && !actions.contains(event.action.rawValue)
            && !actions.contains(String(event.action.rawValue.prefix { $0 != ":" }))
        {
            return false
        }
        if !containers.isEmpty {
            guard event.type == .container, containers.contains(where: { Self.names(event, $0) }) else { return false }
        }
        if !images.isEmpty {
            let image = event.type == .image ? event.actorID : event.attributes["image"] ?? ""
            guard images.contains(where: { image == $0 || image.hasPrefix($0) || event.attributes["name"] == $0 || event.attributes["image"] == $0 })
            else { return false }
        }
        return true
    }

    /// A container named by its name, its ID, or a prefix of its ID.
    private static func names(_ event: Event, _ reference: String) -> Bool {
        event.attributes["name"] == reference || (!reference.isEmpty && event.actorID.hasPrefix(reference))
    }
}
