package loadtest

import (
	"bytes"
	"errors"
	"os"
	"strconv"
)

// Process figures from Linux's /proc: the broker's when --broker-pid is
// given (it must run on this machine), and a worker's own ("self").

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times. Linux
// fixes it at 100 on every architecture Go supports.
const clockTicks = 100

// readRSS returns the resident set size of process pid ("self" for this
// one), in bytes.
func readRSS(pid string) (int64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/statm")
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, errors.New("loadtest: unexpected /proc/" + pid + "/statm")
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0, err
	}
	return pages * int64(os.Getpagesize()), nil
}

// readCPU returns the CPU time (user + system) process pid has used, in
// seconds.
func readCPU(pid string) (float64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from the contents
// of /proc/<pid>/stat. The command name (field 2) may contain spaces and
// parentheses, so fields are counted after its last ')'.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("loadtest: unexpected /proc stat format")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("loadtest: unexpected /proc stat format")
	}
	u, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	s, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("loadtest: unexpected /proc stat format")
	}
	return float64(u+s) / clockTicks, nil
}
