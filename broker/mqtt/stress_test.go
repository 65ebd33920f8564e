package mqtt

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/gatecast/gatecast/acl"
	packet "github.com/gatecast/gatecast/proto/mqtt"
)

// Clients connecting, resuming, taking each other over, subscribing,
// publishing at every QoS and going away, while rights change and
// sessions are kicked: nothing panics or races (run under -race), and once
// everyone is gone the node holds no session, no queued byte and no
// subscription.
func TestConcurrentSessionsStress(t *testing.T) {
	e := newEnv(t, Config{MaxInflight: 4, MaxQueued: 16, MaxSessionExpiry: time.Hour})
	tok, secret := e.token(t, 0, map[string]acl.Permission{"s/#": acl.PermReadWrite, "x/#": acl.PermRead})
	ctx := context.Background()
	tags, _ := e.store.ListTags(ctx)
	var xTag int64
	for _, tg := range tags {
		if tg.Pattern == "x/#" {
			xTag = tg.ID
		}
	}
	const workers, rounds = 8, 60
	var wg sync.WaitGroup
	var mu sync.Mutex
	var live []*client
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range rounds {
				v := []byte{packet.Version311, packet.Version5}[r.IntN(2)]
				cl := e.dial(t, v)
				id := fmt.Sprintf("dev-%d", r.IntN(6)) // shared ids: takeovers and resumes
				p := packet.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: v, CleanStart: r.IntN(2) == 0, KeepAlive: 30,
					ClientID: []byte(id), PasswordFlag: true, UsernameFlag: true, Username: []byte("u"), Password: []byte(secret)}
				if v == packet.Version5 {
					p.Props.SessionExpiryInterval = uint32(r.IntN(2) * 60)
					p.Props.Set(packet.PropSessionExpiryInterval)
				} else {
					p.CleanStart = r.IntN(2) == 0
				}
				stream := packet.AppendConnect(nil, &p)
				stream = packet.AppendSubscribe(stream, v, 1, nil, []packet.SubscribeFilter{{Filter: []byte("s/+"), QoS: byte(r.IntN(3))}, {Filter: []byte("x/#"), QoS: 1}})
				for i := range 5 {
					stream = packet.AppendPublish(stream, v, &packet.Publish{Topic: []byte(fmt.Sprintf("s/%d", i)), Payload: []byte("m"), QoS: byte(i % 3), PacketID: uint16(i + 1)})
				}
				cut := r.IntN(len(stream))
				cl.write(stream[:cut])
				cl.write(stream[cut:])
				// acknowledge what arrived, sometimes
				for _, pk := range cl.tr.packets(t) {
					if pk.h.Type == packet.PUBLISH && r.IntN(2) == 0 {
						var pub packet.Publish
						if packet.DecodePublish(pk.h, pk.body, v, &pub) == nil && pub.QoS > 0 {
							typ := byte(packet.PUBACK)
							if pub.QoS == 2 {
								typ = packet.PUBREC
							}
							cl.write(packet.AppendAck(nil, typ, v, pub.PacketID, 0, nil))
						}
					}
				}
				if r.IntN(3) == 0 {
					mu.Lock()
					live = append(live, cl)
					mu.Unlock()
				} else {
					closeWait(cl.c)
				}
			}
		}()
	}
	// meanwhile: rights change back and forth, sessions get kicked
	stop := make(chan struct{})
	var side sync.WaitGroup
	side.Add(1)
	go func() {
		defer side.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				e.store.DeletePermission(ctx, tok.ID, xTag)
			} else {
				e.store.SetPermission(ctx, tok.ID, xTag, acl.PermRead)
			}
			e.b.RefreshTokens(ctx, tok.ID)
			for _, c := range e.b.Connections(tok.ID) {
				if c.ID%7 == 0 {
					e.b.Kick(c.ID)
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	close(stop)
	side.Wait()
	for _, cl := range live {
		closeWait(cl.c)
	}
	// end every offline session: delete the token
	if err := e.store.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := e.srv.sessions.count()
		if n == 0 && e.b.SessionCount() == 0 && e.srv.held.Load() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %d MQTT sessions, %d broker sessions, %d queued bytes", n, e.b.SessionCount(), e.srv.held.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
