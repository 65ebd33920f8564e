package compare

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

func TestNATSParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want natsOp
	}{
		{"INFO", "INFO {\"server_id\":\"x\"}\r\n", natsOp{Op: "INFO", Arg: []byte(`{"server_id":"x"}`)}},
		{"PING", "PING\r\n", natsOp{Op: "PING"}},
		{"pong lower case", "pong\r\n", natsOp{Op: "PONG"}},
		{"+OK", "+OK\r\n", natsOp{Op: "+OK"}},
		{"-ERR", "-ERR 'Unknown Protocol Operation'\r\n", natsOp{Op: "-ERR", Arg: []byte(`'Unknown Protocol Operation'`)}},
		{"MSG", "MSG bench.fanout 1 5\r\nhello\r\n", natsOp{Op: "MSG", Subject: []byte("bench.fanout"), Sid: []byte("1"), Payload: []byte("hello")}},
		{"MSG reply, tabs", "MSG\tsubj\t12\t_INBOX.x\t2\r\nhi\r\n", natsOp{Op: "MSG", Subject: []byte("subj"), Sid: []byte("12"), Reply: []byte("_INBOX.x"), Payload: []byte("hi")}},
		{"MSG empty payload", "MSG s 1 0\r\n\r\n", natsOp{Op: "MSG", Subject: []byte("s"), Sid: []byte("1"), Payload: []byte{}}},
		{"MSG payload with CRLF", "MSG s 1 4\r\na\r\nb\r\n", natsOp{Op: "MSG", Subject: []byte("s"), Sid: []byte("1"), Payload: []byte("a\r\nb")}},
		{"HMSG", "HMSG s 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n", natsOp{Op: "HMSG", Subject: []byte("s"), Sid: []byte("1"), Header: []byte("NATS/1.0\r\n\r\n"), Payload: []byte("hi")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in + "PING\r\n") // a following operation is not consumed
			n, op, err := parseNATS(in)
			if err != nil || n != len(tc.in) {
				t.Fatalf("parseNATS = %d, %v; want %d", n, err, len(tc.in))
			}
			if op.Op != tc.want.Op || !bytes.Equal(op.Subject, tc.want.Subject) || !bytes.Equal(op.Sid, tc.want.Sid) ||
				!bytes.Equal(op.Reply, tc.want.Reply) || !bytes.Equal(op.Header, tc.want.Header) ||
				!bytes.Equal(op.Payload, tc.want.Payload) || !bytes.Equal(op.Arg, tc.want.Arg) {
				t.Fatalf("parseNATS = %+v, want %+v", op, tc.want)
			}
			for i := range len(tc.in) {
				if n, _, err := parseNATS([]byte(tc.in[:i])); n != 0 || err != nil {
					t.Fatalf("prefix of %d bytes: %d, %v; want incomplete", i, n, err)
				}
			}
		})
	}
}

func TestNATSParseRefusesMalformedOperations(t *testing.T) {
	for _, in := range []string{
		"PING\n", "\r\n", "\n", "FOO\r\n", "PING x\r\n", "MSG s 1\r\n", "MSG s 1 2 3 4\r\n", "MSG s 1 x\r\nab\r\n",
		"MSG s 1 -1\r\n\r\n", "MSG s 1 2\r\nabXY", "MSG s 1 99999999999\r\n", "MSG s 1 67108865\r\n",
		"HMSG s 1 5 3\r\nabc\r\n", "HMSG s 1 3\r\nabc\r\n",
		strings.Repeat("x", natsMaxLine+1),
	} {
		if n, op, err := parseNATS([]byte(in)); err == nil {
			t.Errorf("parseNATS(%.40q) = %d, %+v, no error", in, n, op)
		}
	}
}

func TestNATSSubjects(t *testing.T) {
	for _, tc := range []struct {
		topic  string
		filter bool
		want   string
	}{
		{"bench/fanout", false, "bench.fanout"},
		{"bench/fanin/+", true, "bench.fanin.*"},
		{"bench/#", true, "bench.>"},
		{"#", true, ">"},
		{"a", false, "a"},
	} {
		got, err := appendNATSSubject(nil, tc.topic, tc.filter)
		if err != nil || string(got) != tc.want {
			t.Errorf("appendNATSSubject(%q) = %q, %v; want %q", tc.topic, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		topic  string
		filter bool
	}{
		{"", true}, {"a//b", true}, {"/a", true}, {"a/", true}, {"a.b", true}, {"a b", true}, {"a*", true},
		{"a/+", false}, {"#", false}, {"a/#/b", true}, {"a+/b", true}, {"a\r\n", true},
	} {
		if got, err := appendNATSSubject(nil, tc.topic, tc.filter); err == nil {
			t.Errorf("appendNATSSubject(%q, filter %v) = %q, accepted", tc.topic, tc.filter, got)
		}
	}
}

func TestNATSConnectAndPublish(t *testing.T) {
	b, err := appendNATSConnect(nil, "bench-sub-1", []string{"bench/fanin/+", "bench/x"})
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.HasPrefix(s, "CONNECT {") || !strings.Contains(s, `"verbose":false`) || !strings.Contains(s, `"echo":false`) ||
		!strings.HasSuffix(s, "}\r\nSUB bench.fanin.* 1\r\nSUB bench.x 2\r\nPING\r\n") {
		t.Errorf("CONNECT… = %q", s)
	}
	if _, err := appendNATSConnect(nil, "x", []string{"a b"}); err == nil {
		t.Error("SUB of a subject with a space accepted")
	}
	b, err = appendNATSPub([]byte("keep"), "bench/fanout", []byte("hello"))
	if err != nil || string(b) != "keepPUB bench.fanout 5\r\nhello\r\n" {
		t.Errorf("PUB = %q, %v", b, err)
	}
	if b, err := appendNATSPub([]byte("keep"), "bench/+", nil); err == nil || string(b) != "keep" {
		t.Errorf("PUB to a wildcard = %q, %v; want an error and dst unchanged", b, err)
	}
}

func TestNATSWireEvents(t *testing.T) {
	w := natsWire{}
	if _, ev, err := w.parse([]byte("PING\r\n")); err != nil || ev.kind != evReply || string(ev.reply) != "PONG\r\n" {
		t.Errorf("PING: %+v, %v", ev, err)
	}
	if _, ev, err := w.parse([]byte("PONG\r\n")); err != nil || ev.kind != evAck || ev.ack != natsAckPong {
		t.Errorf("PONG: %+v, %v", ev, err)
	}
	if _, _, err := w.parse([]byte("-ERR 'Authorization Violation'\r\n")); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
		t.Errorf("-ERR: %v", err)
	}
	if n, ev, err := w.parse([]byte("MSG a.b 1 2\r\nhi\r\n")); err != nil || n != 17 || ev.kind != evMessage ||
		string(ev.topic) != "a.b" || string(ev.payload) != "hi" {
		t.Errorf("MSG: %d %+v %v", n, ev, err)
	}
	if b := w.appendKeepAlive(nil); len(b) != 0 {
		t.Errorf("NATS clients answer the server's pings; keep-alive = %q", b)
	}
}

// FuzzNATSParse: the decoder never panics and never reads past its input;
// an operation it accepts is refused by none of its prefixes, and a MSG it
// accepts is rebuilt from its parts to the same bytes when written in the
// canonical form.
func FuzzNATSParse(f *testing.F) {
	f.Add([]byte("MSG bench.fanout 1 64\r\n" + string(appendPayload(nil, 64, 1)) + "\r\n"))
	f.Add([]byte("INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n"))
	f.Add([]byte("PING\r\n"))
	f.Add([]byte("-ERR 'Slow Consumer'\r\n"))
	f.Add([]byte("HMSG s 1 _INBOX.r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, op, err := parseNATS(b)
		if err != nil || n == 0 {
			return
		}
		if n > len(b) {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		for i := range n {
			if m, _, err := parseNATS(b[:i]); m != 0 || err != nil {
				t.Fatalf("prefix %d of an accepted operation: %d, %v", i, m, err)
			}
		}
		if op.Op == "MSG" && op.Reply == nil {
			canon := "MSG " + string(op.Subject) + " " + string(op.Sid) + " " + strconv.Itoa(len(op.Payload)) + "\r\n" + string(op.Payload) + "\r\n"
			m, op2, err := parseNATS([]byte(canon))
			if err != nil || m != len(canon) || !bytes.Equal(op2.Subject, op.Subject) || !bytes.Equal(op2.Payload, op.Payload) {
				t.Fatalf("canonical form %q of %q: %d %+v %v", canon, b[:n], m, op2, err)
			}
		}
	})
}

// FuzzNATSSubject: the topic translation never panics, and a subject it
// produces for a topic name holds no white space or wildcard and maps back
// to the topic.
func FuzzNATSSubject(f *testing.F) {
	f.Add("bench/fanin/17", false)
	f.Add("bench/fanin/+", true)
	f.Add("a/#", true)
	f.Fuzz(func(t *testing.T, topic string, filter bool) {
		s, err := appendNATSSubject(nil, topic, filter)
		if err != nil {
			return
		}
		if bytes.ContainsAny(s, " \t\r\n") || len(s) == 0 {
			t.Fatalf("subject %q for %q", s, topic)
		}
		if !filter {
			if bytes.ContainsAny(s, "*>") || strings.ReplaceAll(string(s), ".", "/") != topic {
				t.Fatalf("subject %q does not map back to topic %q", s, topic)
			}
		}
	})
}
