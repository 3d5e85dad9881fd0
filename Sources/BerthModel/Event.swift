import FoundationEssentials

/// What kind of object an event is about.
public enum EventType: String, Codable, Sendable, Hashable, CaseIterable {
    case container
    case image
    case volume
    case network
    case node
}

/// What happened, with docker's action names where docker has one.
public struct EventAction: RawRepresentable, Codable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    public static let create = EventAction(rawValue: "create")
    public static let start = EventAction(rawValue: "start")
    public static let pause = EventAction(rawValue: "pause")
    public static let unpause = EventAction(rawValue: "unpause")
    public static let stop = EventAction(rawValue: "stop")
    public static let kill = EventAction(rawValue: "kill")
    public static let die = EventAction(rawValue: "die")
    public static let oom = EventAction(rawValue: "oom")
    public static let restart = EventAction(rawValue: "restart")
    public static let update = EventAction(rawValue: "update")
    public static let destroy = EventAction(rawValue: "destroy")
    public static let execStart = EventAction(rawValue: "exec_start")
    public static let execDie = EventAction(rawValue: "exec_die")
    public static let `import` = EventAction(rawValue: "import")
    public static let pull = EventAction(rawValue: "pull")
    public static let tag = EventAction(rawValue: "tag")
    public static let untag = EventAction(rawValue: "untag")
    public static let delete = EventAction(rawValue: "delete")
    public static let connect = EventAction(rawValue: "connect")
    public static let disconnect = EventAction(rawValue: "disconnect")
    public static let remove = EventAction(rawValue: "remove")

    /// docker's `health_status: healthy` and `health_status: unhealthy`.
    public static func healthStatus(_ status: HealthStatus) -> EventAction { EventAction(rawValue: "health_status: \(status.rawValue)") }

    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        self.rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// One entry of the agent's event log.
public struct Event: Codable, Sendable, Hashable {
    /// Position in the log: strictly increasing, never reused.
    public var revision: UInt64
    public var time: Date
    public var type: EventType
    public var action: EventAction
    /// The object's ID (container ID, image digest, volume or network name).
    public var actorID: String
    /// Details: `name`, `image`, `exitCode`, `signal`, `reason`, `state`…
    public var attributes: [String: String]

    public init(
        revision: UInt64, time: Date, type: EventType, action: EventAction, actorID: String,
        attributes: [String: String] = [:]
    ) {
        self.revision = revision
        self.time = time
        self.type = type
        self.action = action
        self.actorID = actorID
        self.attributes = attributes
    }
}
