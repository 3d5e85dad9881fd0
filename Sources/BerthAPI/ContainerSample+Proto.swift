public import BerthModel
import FoundationEssentials
import SwiftProtobuf

extension ContainerSample {
    /// The `stats` answer.
    public var proto: Berth_Agent_V1_ContainerStatsResponse {
        .with {
            $0.id = container.id.rawValue
            $0.name = container.name
            $0.time = Google_Protobuf_Timestamp(date: time)
            $0.cpu = .with {
                $0.usageNanos = cgroup.cpuUsageNanos
                $0.userNanos = cgroup.cpuUserNanos
                $0.systemNanos = cgroup.cpuSystemNanos
                $0.periods = cgroup.cpuPeriods
                $0.throttledPeriods = cgroup.cpuThrottledPeriods
                $0.throttledNanos = cgroup.cpuThrottledNanos
                $0.onlineCpus = UInt32(onlineCPUs)
                $0.systemUsageNanos = hostCPUNanos
            }
            $0.memory = .with {
                $0.usageBytes = cgroup.memoryUsage
                $0.workingSetBytes = cgroup.memoryWorkingSet
                $0.rssBytes = cgroup.memoryRSS
                $0.cacheBytes = cgroup.memoryCache
                $0.limitBytes = cgroup.memoryLimit
                $0.oomEvents = cgroup.oomEvents
                $0.oomKills = cgroup.oomKills
                $0.swapBytes = cgroup.memorySwap
            }
            $0.pids = .with {
                $0.current = cgroup.pidsCurrent
                $0.limit = cgroup.pidsLimit
            }
            $0.networks = networks.map { n in
                .with {
                    $0.interface = n.name
                    $0.rxBytes = n.rxBytes
                    $0.rxPackets = n.rxPackets
                    $0.txBytes = n.txBytes
                    $0.txPackets = n.txPackets
                }
            }
            $0.blockIo = .with {
                $0.readBytes = cgroup.ioReadBytes
                $0.writeBytes = cgroup.ioWriteBytes
            }
        }
    }
}
