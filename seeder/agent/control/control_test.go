package control

import (
	"errors"
	"strings"
	"testing"
)

func TestReadRequest(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Request
		err  string
	}{
		{name: "status", in: `{"op":"status"}` + "\n", want: Request{Op: OpStatus}},
		{name: "notify with targets", in: `{"op":"notify","targets":["a","b"]}` + "\n", want: Request{Op: OpNotify, Targets: []string{"a", "b"}}},
		{name: "no trailing newline", in: `{"op":"reconcile"}`, want: Request{Op: OpReconcile}},
		{name: "only the first line counts", in: `{"op":"status"}` + "\ngarbage", want: Request{Op: OpStatus}},
		{name: "empty", in: "", err: "read request"},
		{name: "blank line", in: "\n", err: "malformed"},
		{name: "not JSON", in: "status\n", err: "malformed"},
		{name: "unknown field", in: `{"op":"status","sudo":true}` + "\n", err: "malformed"},
		{name: "status takes no targets", in: `{"op":"status","targets":["a"]}` + "\n", err: "takes no targets"},
		{name: "unknown op", in: `{"op":"exec"}` + "\n", err: "unknown op"},
		{name: "trailing value", in: `{"op":"status"} 1` + "\n", err: "more than one"},
		{name: "too large", in: `{"op":"notify","targets":["` + strings.Repeat("a", MaxRequest) + `"]}`, err: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadRequest(strings.NewReader(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				if tt.err == "larger than" && !errors.Is(err, ErrTooLarge) {
					t.Errorf("err = %v, want ErrTooLarge", err)
				}
				return
			}
			if err != nil || got.Op != tt.want.Op || strings.Join(got.Targets, ",") != strings.Join(tt.want.Targets, ",") {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// FuzzReadRequest: whatever arrives on the socket, the parser neither panics nor accepts something
// that is not one of the three requests. The seeds run as a regular test.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{`{"op":"status"}`, `{"op":"notify","targets":["zlib"]}` + "\n", `{"op":"reconcile"}` + "\n\n", "\x00\xff", `{"op":"notify","targets":[1]}`, strings.Repeat("[", 1000)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		req, err := ReadRequest(strings.NewReader(string(in)))
		if err != nil {
			return
		}
		switch req.Op {
		case OpStatus, OpReconcile:
			if len(req.Targets) > 0 {
				t.Fatalf("%q accepted with targets", req.Op)
			}
		case OpNotify:
		default:
			t.Fatalf("accepted op %q", req.Op)
		}
		if len(in) > MaxRequest+1 && strings.IndexByte(string(in[:MaxRequest+1]), '\n') < 0 {
			t.Fatal("accepted a request over MaxRequest")
		}
	})
}
