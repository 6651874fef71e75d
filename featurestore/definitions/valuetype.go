package definitions

import "strings"

// ValueType is the declared type of a feature or entity key, spelled as in
// the YAML definitions ("int64", "array<float32>", ...).
type ValueType string

// The value types a feature may declare. Entity keys use only String and Int64.
const (
	Int32        ValueType = "int32"
	Int64        ValueType = "int64"
	Float32      ValueType = "float32"
	Float64      ValueType = "float64"
	String       ValueType = "string"
	Bool         ValueType = "bool"
	Timestamp    ValueType = "timestamp"
	ArrayFloat32 ValueType = "array<float32>"
	ArrayInt64   ValueType = "array<int64>"
	ArrayString  ValueType = "array<string>"
)

// FeatureTypes lists every valid feature type in documentation order.
var FeatureTypes = []ValueType{Int32, Int64, Float32, Float64, String, Bool, Timestamp, ArrayFloat32, ArrayInt64, ArrayString}

// KeyTypes lists the valid entity join-key types.
var KeyTypes = []ValueType{String, Int64}

// IsArray reports whether t is one of the array<...> types.
func (t ValueType) IsArray() bool { return strings.HasPrefix(string(t), "array<") }

// Elem returns the element type of an array type, and t itself otherwise.
func (t ValueType) Elem() ValueType {
	if !t.IsArray() {
		return t
	}
	return ValueType(strings.TrimSuffix(strings.TrimPrefix(string(t), "array<"), ">"))
}

// ValidFeatureType reports whether t may be declared as a feature type.
func ValidFeatureType(t ValueType) bool {
	for _, v := range FeatureTypes {
		if v == t {
			return true
		}
	}
	return false
}

// ValidKeyType reports whether t may be declared as an entity join-key type.
func ValidKeyType(t ValueType) bool { return t == String || t == Int64 }
