package compare

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Instance is one running broker the scenarios talk to.
type Instance struct {
	Broker  string   // "gatecast", "mosquitto", "nats"
	Proto   Protocol // dials this instance
	PID     int      // the process whose VmRSS and CPU time are read from /proc
	Version string
	// CPUs is how many CPUs the process may run on (its affinity, read by
	// Run from /proc/PID/status): the unit of its CPU percentages.
	CPUs int
	stop func() error
}

// Launcher is how broker processes are started: in throwaway directories
// under Dir, and, when Taskset and CPUs are set, under `taskset -c CPUs`
// (taskset sets the affinity and executes the broker, which keeps the PID,
// so the broker and every thread it starts run on those CPUs only and a Go
// broker sizes GOMAXPROCS to them).
type Launcher struct {
	Dir     string
	Taskset string // the taskset binary; "" runs unpinned
	CPUs    string // taskset -c list, e.g. "1"
}

func (l Launcher) start(name, bin string, args, env []string, dir, logPath string) (*process, error) {
	if l.Taskset != "" && l.CPUs != "" {
		args = append([]string{"-c", l.CPUs, bin}, args...)
		bin = l.Taskset
	}
	return startProcess(name, bin, args, env, dir, logPath)
}

// Stop stops the instance (for a process: SIGTERM to its PID, then
// SIGKILL) and waits until it is gone.
func (i *Instance) Stop() error {
	if i.stop == nil {
		return nil
	}
	return i.stop()
}

// Broker starts fresh instances of one broker: every scenario gets its own,
// so no scenario measures what an earlier one left behind.
type Broker struct {
	Name  string
	Start func(ctx context.Context) (*Instance, error)
}

// startTimeout bounds a broker's start-up until it accepts a WebSocket
// client.
const startTimeout = 30 * time.Second

// launch starts one broker process through try (which picks ports, writes
// its configuration and starts it) and waits for ready; a start lost to a
// port race is retried with fresh ports.
func launch(ctx context.Context, name string, try func(attempt int) (*process, func(context.Context) (*Instance, error), error)) (*Instance, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		p, ready, err := try(attempt)
		if err != nil {
			return nil, err
		}
		rctx, cancel := context.WithTimeout(ctx, startTimeout)
		inst, err := waitReady(rctx, p, ready)
		cancel()
		if err == nil {
			inst.PID = p.pid()
			inst.stop = p.Stop
			return inst, nil
		}
		p.Stop()
		lastErr = fmt.Errorf("%s did not start: %w\n--- its log ---\n%s", name, err, p.logTail())
		if ctx.Err() != nil || !addrInUse(p.logTail()) {
			break
		}
	}
	return nil, lastErr
}

// waitReady polls ready until it succeeds, the process exits or ctx ends.
func waitReady(ctx context.Context, p *process, ready func(context.Context) (*Instance, error)) (*Instance, error) {
	var last error
	for {
		if p.exited() {
			return nil, fmt.Errorf("exited during start-up (%v)", p.waitErr)
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		inst, err := ready(actx)
		cancel()
		if err == nil {
			return inst, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%v (last attempt: %v)", ctx.Err(), last)
		case <-p.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// probe dials p once with one subscription and hangs up: the broker serves
// its WebSocket protocol.
func probe(ctx context.Context, p Protocol) error {
	c, err := p.Dial(ctx, "bench-probe", []string{"bench/probe"})
	if err != nil {
		return err
	}
	return c.Close()
}

// GatecastProcess starts `BIN serve` on three random loopback ports (data
// plane, MQTT over TCP and admin API) with a fresh data directory under
// l.Dir and its defaults plus extraArgs (e.g. --outbox-limit 1024), creates
// a token with a readwrite grant on bench/# through the admin API and
// speaks the seed protocol with it.
func GatecastProcess(bin string, l Launcher, extraArgs ...string) Broker {
	return gatecastProcess("gatecast", bin, l, func(wsAddr, _, secret string) Protocol {
		return Seed{URL: "ws://" + wsAddr + "/ws/brocker/", Token: secret}
	}, extraArgs)
}

// Gatecast's MQTT targets of the MQTT table.
const (
	GatecastMQTTTCP = "gatecast-mqtt-tcp" // MQTT over TCP on --mqtt-listen
	GatecastMQTTWS  = "gatecast-mqtt-ws"  // MQTT over WebSocket on --listen at /mqtt
)

// mqttUser is the user name the harness sends to Gatecast (which ignores
// it; MQTT 3.1.1 needs one to send a password).
const mqttUser = "bench"

// GatecastMQTTProcess is GatecastProcess driven by the MQTT client instead
// of the seed one: transport "tcp" dials --mqtt-listen, "ws" the /mqtt path
// of --listen (subprotocol mqtt); the token secret is the CONNECT password.
// The broker is named GatecastMQTTTCP or GatecastMQTTWS.
func GatecastMQTTProcess(bin string, l Launcher, transport string, extraArgs ...string) (Broker, error) {
	switch transport {
	case "tcp":
		return gatecastProcess(GatecastMQTTTCP, bin, l, func(_, mqttAddr, secret string) Protocol {
			return MQTT{URL: "tcp://" + mqttAddr, Username: mqttUser, Password: secret}
		}, extraArgs), nil
	case "ws":
		return gatecastProcess(GatecastMQTTWS, bin, l, func(wsAddr, _, secret string) Protocol {
			return MQTT{URL: "ws://" + wsAddr + "/mqtt", Username: mqttUser, Password: secret}
		}, extraArgs), nil
	}
	return Broker{}, fmt.Errorf("gatecast MQTT transport %q: want tcp or ws", transport)
}

// gatecastProcess starts the gatecast binary as GatecastProcess says and
// speaks the protocol proto returns for its data-plane address, its MQTT
// address and the token secret.
func gatecastProcess(name, bin string, l Launcher, proto func(wsAddr, mqttAddr, secret string) Protocol, extraArgs []string) Broker {
	return Broker{Name: name, Start: func(ctx context.Context) (*Instance, error) {
		version := commandOutput(bin, "version")
		return launch(ctx, name, func(int) (*process, func(context.Context) (*Instance, error), error) {
			dir, err := os.MkdirTemp(l.Dir, "gatecast-")
			if err != nil {
				return nil, nil, err
			}
			wsPort, err1 := freePort()
			adminPort, err2 := freePort()
			mqttPort, err3 := freePort()
			if err := errors.Join(err1, err2, err3); err != nil {
				return nil, nil, err
			}
			key := randomHex(24)
			wsAddr := "127.0.0.1:" + strconv.Itoa(wsPort)
			mqttAddr := "127.0.0.1:" + strconv.Itoa(mqttPort)
			adminURL := "http://127.0.0.1:" + strconv.Itoa(adminPort)
			// The admin key goes through the environment, not argv, so it
			// is not visible in the process list.
			args := append([]string{"serve", "--data-dir", dir, "--listen", wsAddr, "--mqtt-listen", mqttAddr,
				"--admin-listen", "127.0.0.1:" + strconv.Itoa(adminPort), "--log-level", "warn"}, extraArgs...)
			p, err := l.start("gatecast", bin, args,
				append(os.Environ(), "GATECAST_ADMIN_KEY="+key), dir, filepath.Join(dir, "gatecast.log"))
			if err != nil {
				return nil, nil, err
			}
			var pr Protocol
			return p, func(ctx context.Context) (*Instance, error) {
				if pr == nil {
					if err := httpOK(ctx, adminURL+"/healthz"); err != nil {
						return nil, err
					}
					secret, err := gatecastToken(ctx, adminURL, key)
					if err != nil {
						return nil, err
					}
					pr = proto(wsAddr, mqttAddr, secret)
				}
				if err := probe(ctx, pr); err != nil {
					return nil, err
				}
				return &Instance{Broker: name, Proto: pr, Version: version}, nil
			}, nil
		})
	}}
}

// MosquittoProcess starts `mosquitto -c FILE` with a WebSocket listener on
// a random loopback port: anonymous access, no connection limit, no
// persistence, errors and warnings logged only. Mosquitto 2.0.x refuses to
// start with a WebSocket listener alone ("Unable to start any listening
// sockets", eclipse-mosquitto/mosquitto#2284), so the configuration also
// has a plain MQTT listener on another loopback port, which the MQTT
// table uses (MosquittoMQTTProcess). TCP_NODELAY is enabled as Gatecast and
// NATS do.
func MosquittoProcess(bin string, l Launcher) Broker {
	return mosquittoProcess("mosquitto", "ws", bin, l)
}

// MosquittoMQTTProcess is MosquittoProcess for the MQTT table, driven over
// its plain MQTT listener (transport "tcp", named "mosquitto") or its
// WebSocket listener ("ws", named "mosquitto-ws"); the configuration is the
// same.
func MosquittoMQTTProcess(bin string, l Launcher, transport string) (Broker, error) {
	switch transport {
	case "tcp":
		return mosquittoProcess("mosquitto", "tcp", bin, l), nil
	case "ws":
		return mosquittoProcess("mosquitto-ws", "ws", bin, l), nil
	}
	return Broker{}, fmt.Errorf("mosquitto transport %q: want tcp or ws", transport)
}

func mosquittoProcess(name, transport, bin string, l Launcher) Broker {
	return Broker{Name: name, Start: func(ctx context.Context) (*Instance, error) {
		version := firstLine(commandOutput(bin, "-h"))
		return launch(ctx, "mosquitto", func(int) (*process, func(context.Context) (*Instance, error), error) {
			dir, err := os.MkdirTemp(l.Dir, "mosquitto-")
			if err != nil {
				return nil, nil, err
			}
			tcpPort, err1 := freePort()
			wsPort, err2 := freePort()
			if err := errors.Join(err1, err2); err != nil {
				return nil, nil, err
			}
			conf := fmt.Sprintf(`# written by gatecast bench compare: a throwaway instance
per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
connection_messages false
set_tcp_nodelay true

listener %d 127.0.0.1
max_connections -1

listener %d 127.0.0.1
protocol websockets
max_connections -1
`, tcpPort, wsPort)
			confPath := filepath.Join(dir, "mosquitto.conf")
			if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
				return nil, nil, err
			}
			// Mosquitto started as root drops to the mosquitto user after
			// reading its configuration; its directory must stay readable.
			os.Chmod(dir, 0o755)
			p, err := l.start("mosquitto", bin, []string{"-c", confPath}, nil, dir, filepath.Join(dir, "mosquitto.log"))
			if err != nil {
				return nil, nil, err
			}
			proto := MQTT{URL: "ws://127.0.0.1:" + strconv.Itoa(wsPort) + "/"}
			if transport == "tcp" {
				proto = MQTT{URL: "tcp://127.0.0.1:" + strconv.Itoa(tcpPort)}
			}
			return p, func(ctx context.Context) (*Instance, error) {
				if err := probe(ctx, proto); err != nil {
					return nil, err
				}
				return &Instance{Broker: name, Proto: proto, Version: version}, nil
			}, nil
		})
	}}
}

// NATSProcess starts `nats-server -c FILE` with its client port and a
// WebSocket listener (no TLS) on random loopback ports, a connection limit
// above any scenario's and a 10 s write deadline; everything else is the
// server's default.
func NATSProcess(bin string, l Launcher) Broker {
	return Broker{Name: "nats", Start: func(ctx context.Context) (*Instance, error) {
		version := commandOutput(bin, "--version")
		return launch(ctx, "nats", func(int) (*process, func(context.Context) (*Instance, error), error) {
			dir, err := os.MkdirTemp(l.Dir, "nats-")
			if err != nil {
				return nil, nil, err
			}
			tcpPort, err1 := freePort()
			wsPort, err2 := freePort()
			if err := errors.Join(err1, err2); err != nil {
				return nil, nil, err
			}
			conf := fmt.Sprintf(`# written by gatecast bench compare: a throwaway instance
listen: "127.0.0.1:%d"
max_connections: 100000
write_deadline: "10s"
websocket {
  listen: "127.0.0.1:%d"
  no_tls: true
}
`, tcpPort, wsPort)
			confPath := filepath.Join(dir, "nats.conf")
			if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
				return nil, nil, err
			}
			p, err := l.start("nats-server", bin, []string{"-c", confPath}, nil, dir, filepath.Join(dir, "nats.log"))
			if err != nil {
				return nil, nil, err
			}
			proto := NATS{URL: "ws://127.0.0.1:" + strconv.Itoa(wsPort) + "/"}
			return p, func(ctx context.Context) (*Instance, error) {
				if err := probe(ctx, proto); err != nil {
					return nil, err
				}
				return &Instance{Broker: "nats", Proto: proto, Version: version}, nil
			}, nil
		})
	}}
}

// NATSMQTTProcess starts `nats-server -c FILE` with its MQTT listener on a
// random loopback port, driven by the MQTT client over TCP (named
// "nats-mqtt"). NATS keeps MQTT sessions, retained messages and QoS 1/2
// state in JetStream, and a standalone server refuses an mqtt block
// without it, so the configuration enables JetStream with its store in the
// instance's throwaway directory, and names the server (JetStream needs a
// server_name for MQTT). No authentication, as for the other peers; the
// QoS 1 settings (ack_wait, max_ack_pending) do not apply at QoS 0 and
// stay at their defaults. The NATS client port is bound (the server always
// has one) but unused.
func NATSMQTTProcess(bin string, l Launcher) Broker {
	return Broker{Name: "nats-mqtt", Start: func(ctx context.Context) (*Instance, error) {
		version := commandOutput(bin, "--version")
		return launch(ctx, "nats-mqtt", func(int) (*process, func(context.Context) (*Instance, error), error) {
			dir, err := os.MkdirTemp(l.Dir, "nats-mqtt-")
			if err != nil {
				return nil, nil, err
			}
			tcpPort, err1 := freePort()
			mqttPort, err2 := freePort()
			if err := errors.Join(err1, err2); err != nil {
				return nil, nil, err
			}
			conf := natsMQTTConfig(tcpPort, mqttPort, filepath.Join(dir, "jetstream"))
			confPath := filepath.Join(dir, "nats.conf")
			if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
				return nil, nil, err
			}
			p, err := l.start("nats-server", bin, []string{"-c", confPath}, nil, dir, filepath.Join(dir, "nats.log"))
			if err != nil {
				return nil, nil, err
			}
			proto := MQTT{URL: "tcp://127.0.0.1:" + strconv.Itoa(mqttPort)}
			return p, func(ctx context.Context) (*Instance, error) {
				if err := probe(ctx, proto); err != nil {
					return nil, err
				}
				return &Instance{Broker: "nats-mqtt", Proto: proto, Version: version}, nil
			}, nil
		})
	}}
}

// natsMQTTConfig is the nats-server configuration of NATSMQTTProcess.
func natsMQTTConfig(clientPort, mqttPort int, storeDir string) string {
	return fmt.Sprintf(`# written by gatecast bench compare: a throwaway instance
server_name: "bench-compare"
listen: "127.0.0.1:%d"
max_connections: 100000
write_deadline: "10s"
jetstream {
  store_dir: %s
}
mqtt {
  listen: "127.0.0.1:%d"
}
`, clientPort, strconv.Quote(storeDir), mqttPort)
}

// gatecastToken creates, through the admin API, a token with a readwrite
// grant on bench/# and returns its secret.
func gatecastToken(ctx context.Context, adminURL, key string) (string, error) {
	var tok struct {
		ID     int64  `json:"id"`
		Secret string `json:"token"`
	}
	if err := adminCall(ctx, adminURL, key, "POST", "/api/v1/tokens", map[string]any{"name": "bench-compare", "max_connections": 0}, &tok); err != nil {
		return "", err
	}
	var tags []struct {
		ID      int64  `json:"id"`
		Pattern string `json:"pattern"`
	}
	if err := adminCall(ctx, adminURL, key, "GET", "/api/v1/tags", nil, &tags); err != nil {
		return "", err
	}
	tagID := int64(0)
	for _, t := range tags {
		if t.Pattern == "bench/#" {
			tagID = t.ID
		}
	}
	if tagID == 0 {
		var t struct {
			ID int64 `json:"id"`
		}
		if err := adminCall(ctx, adminURL, key, "POST", "/api/v1/tags", map[string]any{"pattern": "bench/#"}, &t); err != nil {
			return "", err
		}
		tagID = t.ID
	}
	path := fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tagID)
	if err := adminCall(ctx, adminURL, key, "PUT", path, map[string]any{"permission": "readwrite"}, nil); err != nil {
		return "", err
	}
	if tok.Secret == "" {
		return "", errors.New("gatecast admin API: token created without a secret in the answer")
	}
	return tok.Secret, nil
}

func adminCall(ctx context.Context, base, key, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("gatecast admin API %s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// commandOutput runs a version query, bounded in time; "" if it fails to
// print anything.
func commandOutput(bin string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return strings.TrimSpace(string(out))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}
