import FoundationEssentials

/// One container as the agent records it: identity, what was asked, what is.
public struct Container: Codable, Sendable, Hashable, Identifiable {
    public var id: ContainerID
    public var name: String
    public var spec: ContainerSpec
    /// The content digest of the image the container was created from.
    public var imageID: String
    public var status: ContainerStatus

    public init(id: ContainerID, name: String, spec: ContainerSpec, imageID: String, status: ContainerStatus) {
        self.id = id
        self.name = name
        self.spec = spec
        self.imageID = imageID
        self.status = status
    }
}
