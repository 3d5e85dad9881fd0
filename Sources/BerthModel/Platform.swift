/// The host's platform as OCI images and Docker's seccomp profiles name it.
public enum Platform {
    public static var architecture: String {
        #if arch(x86_64)
        return "amd64"
        #elseif arch(arm64)
        return "arm64"
        #else
        return "unknown"
        #endif
    }
}
