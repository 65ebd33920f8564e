package netpoll

import (
	"bytes"
	"errors"
	"strconv"
)

// Request strictness. gobwas/ws parses upgrade requests leniently (it
// accepts a space before a header's colon, a bare CR inside a value, any
// HTTP/1.x version, a body framed by both Transfer-Encoding and
// Content-Length). A proxy in front of Gatecast may parse the same bytes
// differently — the root of request smuggling — so checkRequest refuses,
// before gobwas sees them, every request whose meaning two parsers could
// disagree on (RFC 9112 sections 2.2, 3, 5, 6.3 and RFC 9110 section 7.2).
var (
	errReqLineEnding  = errors.New("line not terminated by CRLF")
	errReqLine        = errors.New("malformed request line")
	errReqVersion     = errors.New("unsupported HTTP version (WebSocket needs HTTP/1.1)")
	errReqFieldName   = errors.New("malformed header field name")
	errReqSpaceColon  = errors.New("whitespace between header field name and colon")
	errReqFolding     = errors.New("obsolete line folding")
	errReqFieldValue  = errors.New("control character in header field value")
	errReqHost        = errors.New("exactly one Host header is required")
	errReqTE          = errors.New("Transfer-Encoding is not allowed on an upgrade request")
	errReqCL          = errors.New("an upgrade request has no body (Content-Length must be 0)")
	errReqDuplicateCL = errors.New("more than one Content-Length header")
)

// checkRequest validates the exact bytes of one request (request line,
// header fields, terminating empty line). It allocates nothing.
func checkRequest(req []byte) error {
	line, rest, err := nextLine(req)
	if err != nil {
		return err
	}
	if err := checkRequestLine(line); err != nil {
		return err
	}
	hosts, cls := 0, 0
	for {
		line, rest, err = nextLine(rest)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			break // the empty line that ends the header block
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errReqFolding
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errReqFieldName
		}
		name, value := line[:colon], line[colon+1:]
		if c := name[len(name)-1]; c == ' ' || c == '\t' {
			return errReqSpaceColon
		}
		for _, c := range name {
			if !isTokenChar(c) {
				return errReqFieldName
			}
		}
		for _, c := range value {
			// field-value = *( VCHAR / obs-text / SP / HTAB ); a CR here is a
			// bare CR (CRLF ended the line), NUL and other controls are never
			// allowed.
			if c < 0x20 && c != '\t' || c == 0x7f {
				return errReqFieldValue
			}
		}
		switch {
		case asciiEqualFold(name, "Host"):
			hosts++
		case asciiEqualFold(name, "Transfer-Encoding"):
			return errReqTE
		case asciiEqualFold(name, "Content-Length"):
			cls++
			if cls > 1 {
				return errReqDuplicateCL
			}
			if n, err := strconv.ParseUint(string(trimSpaceTab(value)), 10, 63); err != nil || n != 0 {
				return errReqCL
			}
		}
	}
	if len(rest) != 0 {
		return errReqLine // bytes after the header block belong to no request
	}
	if hosts != 1 {
		return errReqHost
	}
	return nil
}

// nextLine splits b at its first CRLF. A LF without CR before it is an
// error: a lenient parser would end the line there, a strict one not.
func nextLine(b []byte) (line, rest []byte, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, errReqLineEnding
	}
	return b[:i-1], b[i+1:], nil
}

// checkRequestLine accepts "METHOD SP request-target SP HTTP/1.1" with a
// token method and a target of visible ASCII.
func checkRequestLine(line []byte) error {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return errReqLine
	}
	for _, c := range line[:sp1] {
		if !isTokenChar(c) {
			return errReqLine
		}
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return errReqLine
	}
	for _, c := range rest[:sp2] {
		if c <= 0x20 || c >= 0x7f {
			return errReqLine
		}
	}
	version := rest[sp2+1:]
	if len(version) != 8 || !bytes.HasPrefix(version, []byte("HTTP/")) {
		return errReqLine
	}
	if string(version) != "HTTP/1.1" {
		return errReqVersion
	}
	return nil
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110
// section 5.6.2).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		d := s[i]
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

func trimSpaceTab(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// badRequestResponse builds the 400 answer to a request checkRequest
// refused; the reason is one of the fixed messages above (ASCII).
func badRequestResponse(dst []byte, reason string) []byte {
	body := "bad request: " + reason + "\n"
	dst = append(dst, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, body...)
}
