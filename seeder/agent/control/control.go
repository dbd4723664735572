package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// DefaultSocket is where systemd's pacman-ipfs.socket listens.
const DefaultSocket = "/run/pacman-ipfs/control.sock"

// MaxRequest bounds a request line. A transaction's package names fit many times over.
const MaxRequest = 64 << 10

// Deadline bounds a whole exchange on the agent's side.
const Deadline = 5 * time.Second

// Operations.
const (
	OpStatus    = "status"
	OpNotify    = "notify"
	OpReconcile = "reconcile"
)

// Request is what a client sends.
type Request struct {
	Op      string   `json:"op"`
	Targets []string `json:"targets,omitempty"`
}

// Response is what the agent answers.
type Response struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Status json.RawMessage `json:"status,omitempty"` // for OpStatus: the agent's status document
}

// ErrTooLarge is returned for a request over MaxRequest bytes.
var ErrTooLarge = fmt.Errorf("request larger than %d bytes", MaxRequest)

// ReadRequest reads and checks one request line.
func ReadRequest(r io.Reader) (Request, error) {
	line, err := readLine(r)
	if err != nil {
		return Request{}, err
	}
	var req Request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Request{}, fmt.Errorf("malformed request: %w", err)
	}
	if dec.More() {
		return Request{}, errors.New("malformed request: more than one JSON value")
	}
	switch req.Op {
	case OpStatus, OpReconcile:
		if len(req.Targets) > 0 {
			return Request{}, fmt.Errorf("malformed request: %q takes no targets", req.Op)
		}
	case OpNotify:
	case "":
		return Request{}, errors.New(`malformed request: no "op"`)
	default:
		return Request{}, fmt.Errorf("unknown op %q", req.Op)
	}
	return req, nil
}

// readLine reads up to the first newline, refusing more than MaxRequest bytes.
func readLine(r io.Reader) ([]byte, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, MaxRequest+1), 4096)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxRequest {
			return nil, ErrTooLarge
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil // a last line without newline is fine
		default:
			return nil, fmt.Errorf("read request: %w", err)
		}
	}
}

// WriteResponse writes one response line.
func WriteResponse(w io.Writer, resp Response) error {
	b, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// Do sends req to the agent listening at path and returns its answer. The whole exchange is bounded by
// ctx. A missing socket or a refused connection (no agent) yields an error satisfying IsNoAgent.
func Do(ctx context.Context, path string, req Request) (Response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, &noAgentError{path: path, err: err}
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return Response{}, err
	}
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return Response{}, fmt.Errorf("agent at %s: %w", path, err)
	}
	line, err := bufio.NewReader(io.LimitReader(conn, 16<<20)).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return Response{}, fmt.Errorf("agent at %s: %w", path, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("agent at %s: bad answer: %w", path, err)
	}
	if !resp.OK {
		return resp, fmt.Errorf("agent at %s: %s", path, resp.Error)
	}
	return resp, nil
}

type noAgentError struct {
	path string
	err  error
}

func (e *noAgentError) Error() string { return fmt.Sprintf("no agent at %s: %v", e.path, e.err) }
func (e *noAgentError) Unwrap() error { return e.err }

// IsNoAgent says whether err means nothing listens at the socket: it does not exist, or nobody accepts
// on it. Any other failure to connect (a permission, say) is not "no agent".
func IsNoAgent(err error) bool {
	var e *noAgentError
	return errors.As(err, &e) && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED))
}
