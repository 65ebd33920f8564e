package admin

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"unicode/utf8"

	"github.com/gatecast/gatecast/topic"
)

// Publisher delivers a server-side publish (POST /api/v1/publish): the
// message goes to every subscriber whose filter matches topic, on every
// node, as if published by no client. It returns how many subscribers on
// this node received it (other nodes deliver on their own). isJSON tells
// whether payload is JSON text, which seed subscribers get embedded as
// JSON; any other payload they get as a JSON string (the seed rule of
// docs/protocol-seed.md). The server implements it over the broker.
type Publisher interface {
	Publish(topic string, payload []byte, isJSON bool) (int, error)
}

// DefaultMaxPublishBytes is Config.MaxPublishBytes's default: the largest
// message a seed client may send (--max-frame-size's default).
const DefaultMaxPublishBytes = 64 << 10

// PublishRequest is the body of POST /api/v1/publish: a topic and exactly
// one of Message (any JSON value but null) and PayloadBase64 (bytes in
// standard base64 with padding).
type PublishRequest struct {
	Topic         string          `json:"topic"`
	Message       json.RawMessage `json:"message,omitempty"`
	PayloadBase64 *string         `json:"payload_base64,omitempty"`
}

// PublishResult is the answer of POST /api/v1/publish.
type PublishResult struct {
	Topic string `json:"topic"`
	Bytes int    `json:"bytes"` // the payload's size
	JSON  bool   `json:"json"`  // the payload is JSON text (embedded as JSON for seed subscribers)
	// LocalDeliveries counts the subscribers on this node that got it. In
	// cluster mode the message is also forwarded to every other node with
	// a matching subscriber, whose deliveries are not counted here.
	LocalDeliveries int `json:"local_deliveries"`
}

// decodePublish parses and validates the body of POST /api/v1/publish.
func decodePublish(body []byte, max int) (req PublishRequest, payload []byte, isJSON bool, e *apiError) {
	if e = decodeJSON(body, &req); e != nil {
		return req, nil, false, e
	}
	if req.Topic == "" {
		return req, nil, false, invalid("topic is required")
	}
	if err := topic.ValidateTopic(req.Topic); err != nil {
		return req, nil, false, invalid("topic: %v (a publish topic has no wildcards)", err)
	}
	hasMsg := req.Message != nil
	switch {
	case hasMsg && req.PayloadBase64 != nil:
		return req, nil, false, invalid("give message or payload_base64, not both")
	case !hasMsg && req.PayloadBase64 == nil:
		return req, nil, false, invalid("give message (JSON) or payload_base64 (bytes)")
	case hasMsg:
		if bytes.Equal(bytes.TrimSpace(req.Message), []byte("null")) {
			return req, nil, false, invalid("message must not be null (seed clients drop a null message)")
		}
		var b bytes.Buffer
		if err := json.Compact(&b, req.Message); err != nil {
			return req, nil, false, &apiError{400, codeInvalidJSON, "message is not valid JSON"}
		}
		payload, isJSON = b.Bytes(), true
	default:
		p, err := base64.StdEncoding.Strict().DecodeString(*req.PayloadBase64)
		if err != nil {
			return req, nil, false, invalid("payload_base64 is not standard base64 (RFC 4648, with padding)")
		}
		payload, isJSON = p, utf8.Valid(p) && json.Valid(p)
	}
	if len(payload) > max {
		return req, nil, false, &apiError{413, codeBodyTooLarge, fmt.Sprintf("the message is %d bytes, at most %d allowed (--max-frame-size)", len(payload), max)}
	}
	return req, payload, isJSON, nil
}

func (h *handler) publish(w http.ResponseWriter, r *http.Request) {
	if h.publisher == nil {
		writeError(w, &apiError{404, codeNotFound, "server-side publish is not enabled on this listener"})
		return
	}
	body, e := readBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	req, payload, isJSON, e := decodePublish(body, h.maxPublish)
	if e != nil {
		writeError(w, e)
		return
	}
	// The topic and size are recorded, never the payload.
	audit(r, "target", "topic "+req.Topic, "bytes", len(payload), "json", isJSON)
	n, err := h.publisher.Publish(req.Topic, payload, isJSON)
	if err != nil {
		h.fault(w, r, "publishing", err)
		return
	}
	audit(r, "local_deliveries", n)
	writeJSON(w, http.StatusOK, PublishResult{Topic: req.Topic, Bytes: len(payload), JSON: isJSON, LocalDeliveries: n})
}

// Publish publishes a message from the server (POST /api/v1/publish).
func (c *Client) Publish(ctx context.Context, req PublishRequest) (PublishResult, error) {
	var res PublishResult
	err := c.do(ctx, "POST", "/api/v1/publish", req, &res)
	return res, err
}

// PublishRequestFor builds the request for payload: a JSON payload as
// message, any other as payload_base64.
func PublishRequestFor(topic string, payload []byte) PublishRequest {
	if utf8.Valid(payload) && json.Valid(payload) {
		return PublishRequest{Topic: topic, Message: json.RawMessage(payload)}
	}
	s := base64.StdEncoding.EncodeToString(payload)
	return PublishRequest{Topic: topic, PayloadBase64: &s}
}

const publishUsage = `Usage: gatecast publish TOPIC MESSAGE
       gatecast publish --file FILE TOPIC

Publishes MESSAGE on TOPIC from the server, authorized by the admin key (a
backend sending a command to devices): every subscriber whose filter matches
TOPIC receives it, on every node. MESSAGE that is valid JSON is sent as JSON
('{"reboot":true}', '42', '"text"'); anything else as bytes, which seed
clients receive as a JSON string. --file reads the payload from FILE
("-": stdin), as bytes or JSON by the same rule. The publish is recorded in
the audit log (topic and size, never the payload).
`

func (c *cli) publish(args []string) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(c.stdout, publishUsage)
		return errHelp
	}
	fs := c.flags("publish")
	var file string
	fs.StringVar(&file, "file", "", "")
	pos, err := c.parse(fs, args, publishUsage, 1, 2)
	if err != nil {
		return err
	}
	var payload []byte
	switch {
	case file != "" && len(pos) == 2:
		return &usageError{"give MESSAGE or --file, not both", publishUsage}
	case file != "":
		if payload, err = readPayload(file); err != nil {
			return err
		}
	case len(pos) == 2:
		payload = []byte(pos[1])
	default:
		return &usageError{"publish needs a MESSAGE (or --file)", publishUsage}
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	res, err := api.Publish(c.ctx, PublishRequestFor(pos[0], payload))
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(res)
	}
	kind := "bytes (seed clients get a JSON string)"
	if res.JSON {
		kind = "JSON"
	}
	fmt.Fprintf(c.stdout, "published %d bytes of %s on %q: delivered to %d subscriber(s) on this node (in a cluster, also forwarded to the other nodes' subscribers)\n",
		res.Bytes, kind, res.Topic, res.LocalDeliveries)
	return nil
}

// readPayload reads a publish payload from a file or stdin ("-"), at most
// maxBodyBytes.
func readPayload(path string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxBodyBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxBodyBytes {
		return nil, errors.New("--file: the payload is larger than 1 MiB")
	}
	return b, nil
}
