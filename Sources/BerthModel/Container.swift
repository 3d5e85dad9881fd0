import FoundationEssentials

/// One container as the agent records it: identity, what was asked, what is.
public struct Container: Codable, Sendable, Hashable, Identifiable {
    public var id: ContainerID
    public var name: String
    public var spec: ContainerSpec
    /// The content digest of the image the container was created from.
    public var imageID: String
    public var status: ContainerStatus
    /// The networks the container is on, with its addresses.
    public var endpoints: [ContainerEndpoint]
    /// The published ports in effect while it runs, host ports resolved.
    public var publishedPorts: [PublishedPort]
    /// What admission decided for its process; nil in a record made
    /// before admissions were kept (worked out at each start then).
    public var admitted: AdmittedProcess?

    public init(
        id: ContainerID, name: String, spec: ContainerSpec, imageID: String, status: ContainerStatus,
        endpoints: [ContainerEndpoint] = [], publishedPorts: [PublishedPort] = [], admitted: AdmittedProcess? = nil
    ) {
        self.id = id
        self.name = name
        self.spec = spec
        self.imageID = imageID
        self.status = status
        self.endpoints = endpoints
        self.publishedPorts = publishedPorts
        self.admitted = admitted
    }

    enum CodingKeys: String, CodingKey {
        case id, name, spec, imageID, status, endpoints, publishedPorts, admitted
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            id: try c.decode(ContainerID.self, forKey: .id), name: try c.decode(String.self, forKey: .name),
            spec: try c.decode(ContainerSpec.self, forKey: .spec), imageID: try c.decode(String.self, forKey: .imageID),
            status: try c.decode(ContainerStatus.self, forKey: .status),
            endpoints: try c.decodeIfPresent([ContainerEndpoint].self, forKey: .endpoints) ?? [],
            publishedPorts: try c.decodeIfPresent([PublishedPort].self, forKey: .publishedPorts) ?? [],
            admitted: try c.decodeIfPresent(AdmittedProcess.self, forKey: .admitted))
    }
}

/// A port published on the host while the container runs: where it listens
/// and where it leads (`berth port`).
public struct PublishedPort: Codable, Sendable, Hashable, CustomStringConvertible {
    /// The host address; nil for every address of the host.
    public var hostIP: IPv4Address?
    public var hostPort: UInt16
    public var containerPort: UInt16
    public var transport: PortProtocol
    /// The container's address the port leads to.
    public var containerIP: IPv4Address

    public init(hostIP: IPv4Address?, hostPort: UInt16, containerPort: UInt16, transport: PortProtocol, containerIP: IPv4Address) {
        self.hostIP = hostIP
        self.hostPort = hostPort
        self.containerPort = containerPort
        self.transport = transport
        self.containerIP = containerIP
    }

    /// `80/tcp -> 0.0.0.0:32768`, as `docker port` shows it.
    public var description: String {
        "\(containerPort)/\(transport.rawValue) -> \(hostIP?.description ?? "0.0.0.0"):\(hostPort)"
    }
}
