// Package wire holds the messages that cross cluster members and the codec
// of the values they carry.
package wire

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/affinity-go/affinity/messages"
)

// ErrNotPortable: a payload or result of a type that cannot cross members.
var ErrNotPortable = errors.New("value cannot cross cluster members")

// EncodeValue turns a Go value into its wire form. Portable values: nil,
// []byte, string, int, protobuf messages and messages.Ref.
func EncodeValue(v any) (*Value, error) {
	switch x := v.(type) {
	case nil:
		return &Value{Kind: &Value_Nil{Nil: true}}, nil
	case []byte:
		return &Value{Kind: &Value_Raw{Raw: x}}, nil
	case string:
		return &Value{Kind: &Value_Text{Text: x}}, nil
	case int:
		return &Value{Kind: &Value_Int{Int: int64(x)}}, nil
	case messages.Ref:
		return &Value{Kind: &Value_Ref{Ref: EncodeRef(&x)}}, nil
	case *messages.Ref:
		return &Value{Kind: &Value_Ref{Ref: EncodeRef(x)}}, nil
	case proto.Message:
		a, err := anypb.New(x)
		if err != nil {
			return nil, fmt.Errorf("%w: %T: %v", ErrNotPortable, v, err)
		}
		return &Value{Kind: &Value_Proto{Proto: a}}, nil
	}
	return nil, fmt.Errorf("%w: %T (use []byte, string, int, a protobuf message or a Ref)", ErrNotPortable, v)
}

// DecodeValue is EncodeValue's inverse. A protobuf message whose type is not
// linked into this binary is an error.
func DecodeValue(v *Value) (any, error) {
	switch x := v.GetKind().(type) {
	case nil, *Value_Nil:
		return nil, nil
	case *Value_Raw:
		return x.Raw, nil
	case *Value_Text:
		return x.Text, nil
	case *Value_Int:
		return int(x.Int), nil
	case *Value_Ref:
		return *DecodeRef(x.Ref), nil
	case *Value_Proto:
		m, err := x.Proto.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNotPortable, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("%w: unknown value kind %T", ErrNotPortable, v.GetKind())
}

// EncodeRef returns the wire form of r (nil for nil).
func EncodeRef(r *messages.Ref) *Ref {
	if r == nil {
		return nil
	}
	return &Ref{Session: r.Session, Pool: r.Pool, Worker: int32(r.Worker), Incarnation: r.Incarnation, Key: r.Key, Member: r.Member}
}

// DecodeRef returns the Go form of r (nil for nil).
func DecodeRef(r *Ref) *messages.Ref {
	if r == nil {
		return nil
	}
	return &messages.Ref{Session: r.Session, Pool: r.Pool, Worker: int(r.Worker), Incarnation: r.Incarnation, Key: r.Key, Member: r.Member}
}
