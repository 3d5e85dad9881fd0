#ifndef BERTH_CSECCOMP_SHIM_H
#define BERTH_CSECCOMP_SHIM_H
#include <seccomp.h>

/* libseccomp's action macros take arguments, which Swift cannot import. */
static inline uint32_t berth_scmp_act_allow(void) { return SCMP_ACT_ALLOW; }
static inline uint32_t berth_scmp_act_errno(uint32_t e) { return SCMP_ACT_ERRNO(e); }
static inline uint32_t berth_scmp_act_kill_process(void) { return SCMP_ACT_KILL_PROCESS; }
static inline uint32_t berth_scmp_act_kill_thread(void) { return SCMP_ACT_KILL_THREAD; }
static inline uint32_t berth_scmp_act_trap(void) { return SCMP_ACT_TRAP; }
static inline uint32_t berth_scmp_act_log(void) { return SCMP_ACT_LOG; }
static inline uint32_t berth_scmp_act_trace(uint32_t x) { return SCMP_ACT_TRACE(x); }
#endif
