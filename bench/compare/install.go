package compare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// peerPackages maps each peer binary to the Debian package that holds it.
var peerPackages = map[string]string{
	"mosquitto":   "mosquitto",
	"nats-server": "nats-server",
}

// findBinary looks name up in PATH, then in the sbin directories a
// non-root PATH often lacks (Debian installs mosquitto and nats-server in
// /usr/sbin).
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or /usr/sbin", name)
}

// EnsurePeers returns the paths of the given peer binaries ("mosquitto",
// "nats-server"). Missing ones are installed with apt-get when install is
// true and this process runs as root; otherwise the error says what to
// install. Debian's packages start a system service on installation; a
// temporary /usr/sbin/policy-rc.d (only when none exists) keeps them from
// starting, so no broker but the harness's own runs. The install is
// serialised with the test suite's (the same lock file as
// internal/testserver).
func EnsurePeers(ctx context.Context, names []string, install bool, log io.Writer) (map[string]string, error) {
	paths := map[string]string{}
	var missing []string
	for _, n := range names {
		if _, ok := peerPackages[n]; !ok {
			return nil, fmt.Errorf("unknown peer binary %q", n)
		}
		if p, err := findBinary(n); err == nil {
			paths[n] = p
		} else {
			missing = append(missing, peerPackages[n])
		}
	}
	if len(missing) == 0 {
		return paths, nil
	}
	hint := "install them with: sudo apt-get install " + strings.Join(missing, " ")
	if !install {
		return nil, fmt.Errorf("missing %s (%s, or run as root without --install=false)", strings.Join(missing, ", "), hint)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("missing %s and not running as root, so they cannot be installed here: %s", strings.Join(missing, ", "), hint)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return nil, fmt.Errorf("missing %s and there is no apt-get: install the Debian packages %s by other means", strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	fmt.Fprintf(log, "installing %s with apt-get (services kept from starting)…\n", strings.Join(missing, " "))
	if err := aptInstall(ctx, missing, log); err != nil {
		return nil, err
	}
	for _, n := range names {
		p, err := findBinary(n)
		if err != nil {
			return nil, fmt.Errorf("after installing %s: %w", peerPackages[n], err)
		}
		paths[n] = p
	}
	return paths, nil
}

const policyRC = "/usr/sbin/policy-rc.d"

func aptInstall(ctx context.Context, pkgs []string, log io.Writer) error {
	unlock, err := lockInstalls(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	// policy-rc.d exit status 101 = "action forbidden": invoke-rc.d and
	// deb-systemd-invoke then do not start the packages' services.
	if _, err := os.Stat(policyRC); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(policyRC, []byte("#!/bin/sh\n# temporary, written by gatecast bench compare during apt-get install\nexit 101\n"), 0o755); err == nil {
			defer os.Remove(policyRC)
		}
	}
	run := func(limit time.Duration, args ...string) error {
		cctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		cmd := exec.CommandContext(cctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			s := strings.TrimSpace(string(out))
			if len(s) > 2000 {
				s = "…" + s[len(s)-2000:]
			}
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, s)
		}
		fmt.Fprintf(log, "apt-get %s: done\n", args[0])
		return nil
	}
	if err := run(5*time.Minute, "update"); err != nil {
		return err
	}
	return run(8*time.Minute, append([]string{"install", "-y"}, pkgs...)...)
}

// lockInstalls takes the machine-wide apt lock shared with
// internal/testserver, waiting up to 10 minutes.
func lockInstalls(ctx context.Context) (func(), error) {
	path := filepath.Join(os.TempDir(), "gatecast-testserver-apt.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open install lock: %w", err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			f.Close()
			return nil, fmt.Errorf("waited too long for another installation to finish (lock %s)", path)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
