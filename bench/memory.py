"""Process memory helpers shared by the benchmarks (Linux /proc; peak RSS can be reset through clear_refs)."""
import resource


def status_kb(key):
    "A field of /proc/self/status in KiB (e.g. 'VmHWM', 'VmRSS'), or None where it is not available."
    try:
        for line in open('/proc/self/status'):
            if line.startswith(key + ':'): return int(line.split()[1])
    except OSError: pass
    return None


def reset_cpu_peak() -> bool:
    "Reset the peak resident set size (VmHWM) of this process; False where the kernel does not allow it."
    try:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        return True
    except OSError: return False


def maxrss_kb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
