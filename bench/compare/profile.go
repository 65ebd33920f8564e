package compare

import (
	"os"
	"runtime/pprof"
)

// cpuProfileEnv names a file that receives a pprof CPU profile of the
// harness process for the whole run (undocumented in --help: a tool for
// working on the harness, not a figure of the report). Brokers are separate
// processes and are not in it.
const cpuProfileEnv = "GATECAST_BENCH_CPUPROFILE"

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
