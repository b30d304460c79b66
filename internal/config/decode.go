package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The raw* types mirror the file. Every leaf is a field, so that a value of the
// wrong type is reported with its key together with every other problem, and an
// absent key can be told from a zero one.
//
// To add a key: add a field with its toml tag here, a field to the public type in
// config.go, read and check it in validate.go, document it in docs/config.md and
// add a case to the tests. Unknown-key detection and "did you mean" hints follow
// the tags automatically.
type rawFile struct {
	Cluster rawCluster  `toml:"cluster"`
	Node    []rawNode   `toml:"node"`
	Volume  []rawVolume `toml:"volume"`
}

type rawCluster struct {
	Name            field `toml:"name"`
	Secret          field `toml:"secret"`
	SecretFile      field `toml:"secret_file"`
	Failover        field `toml:"failover"`
	FailoverProfile field `toml:"failover_profile"`
}

type rawNode struct {
	Name          field `toml:"name"`
	ControlSocket field `toml:"control_socket"`
	NBDTCP        field `toml:"nbd_tcp"`
	Address       field `toml:"address"`
	Metrics       field `toml:"metrics"`
	Gossip        field `toml:"gossip"`
	Witness       field `toml:"witness"`
}

type rawVolume struct {
	Name              field        `toml:"name"`
	Size              field        `toml:"size"`
	Description       field        `toml:"description"`
	BlockSize         field        `toml:"block_size"`
	DeviceTimeout     field        `toml:"device_timeout"`
	DeadConnTimeout   field        `toml:"dead_conn_timeout"`
	BytesPerBit       field        `toml:"bytes_per_bit"`
	ALExtents         field        `toml:"al_extents"`
	PeerSlots         field        `toml:"peer_slots"`
	Protocol          field        `toml:"protocol"`
	PingInterval      field        `toml:"ping_interval"`
	PingTimeout       field        `toml:"ping_timeout"`
	Timeout           field        `toml:"timeout"`
	ConnectInterval   field        `toml:"connect_interval"`
	MaxEpochWrites    field        `toml:"max_epoch_writes"`
	ResyncRateMax     field        `toml:"resync_rate_max"`
	ResyncRateMin     field        `toml:"resync_rate_min"`
	ResyncInFlight    field        `toml:"resync_in_flight"`
	ResyncChecksums   field        `toml:"resync_checksums"`
	AfterSplitBrain   field        `toml:"after_split_brain"`
	SplitBrainHandler field        `toml:"split_brain_handler"`
	AutoPromote       field        `toml:"auto_promote"`
	Preferred         field        `toml:"preferred"`
	QuorumLoss        field        `toml:"quorum_loss"`
	AfterPromote      field        `toml:"after_promote"`
	BeforeDemote      field        `toml:"before_demote"`
	FencePeer         field        `toml:"fence_peer"`
	TwoNode           field        `toml:"two_node"`
	QuorumLost        field        `toml:"quorum_lost"`
	HandlerTimeout    field        `toml:"handler_timeout"`
	Replica           []rawReplica `toml:"replica"`
}

type rawReplica struct {
	Node      field `toml:"node"`
	Disk      field `toml:"disk"`
	Create    field `toml:"create"`
	NBDSocket field `toml:"nbd_socket"`
	Device    field `toml:"device"`
	MetaDisk  field `toml:"meta_disk"`
}

// field is one TOML value, kept as decoded: string, int64, float64, bool, a time
// type, []any or map[string]any.
type field struct {
	v   any
	set bool
}

// UnmarshalTOML implements toml.Unmarshaler.
func (f *field) UnmarshalTOML(v any) error {
	f.v, f.set = v, true
	return nil
}

// tomlType names the TOML type of a decoded value, for messages.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case time.Time:
		return "datetime"
	case map[string]any:
		return "table"
	default:
		return "array"
	}
}

// tables lists the tables of the schema whose TOML form is fixed, with the type
// the file must give them (as MetaData.Type spells it).
var tables = []struct{ key, want, form string }{
	{"cluster", "Hash", "[cluster]"},
	{"node", "ArrayHash", "[[node]]"},
	{"volume", "ArrayHash", "[[volume]]"},
	{"volume.replica", "ArrayHash", "[[volume.replica]]"},
}

// metaTypes describes the types MetaData.Type returns, for messages.
var metaTypes = map[string]string{
	"Hash":          "a table",
	"ArrayHash":     "an array of tables",
	"Array":         "an array",
	"String":        "a string",
	"Integer":       "an integer",
	"Float":         "a float",
	"Bool":          "a boolean",
	"Datetime":      "a datetime",
	"DatetimeLocal": "a datetime",
	"DateLocal":     "a date",
	"TimeLocal":     "a time",
}

// schema maps each table path ("" for the top level, "volume.replica") to its keys,
// from the toml tags of rawFile.
var schema = func() map[string][]string {
	m := map[string][]string{}
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			m[path] = append(m[path], name)
			ft := f.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[field]() {
				walk(ft, strings.TrimPrefix(path+"."+name, "."))
			}
		}
	}
	walk(reflect.TypeFor[rawFile](), "")
	return m
}()

// decode parses the TOML. A syntax error or a table of the wrong form stops it
// (err); unknown keys do not: they are returned as problems, and the values are
// then checked by validator.
func decode(data []byte) (raw *rawFile, problems []error, err error) {
	raw = new(rawFile)
	md, err := toml.Decode(string(data), raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, nil, &Error{Problem: fmt.Sprintf("line %d: %s", pe.Position.Line, pe.Message), errs: []error{ErrInvalid, err}}
		}
		// The syntax is fine but a table has the wrong form, e.g. [node] for [[node]].
		for _, t := range tables {
			if got := md.Type(strings.Split(t.key, ".")...); got != "" && got != t.want && !(t.want == "ArrayHash" && got == "Array") {
				return nil, nil, &Error{Key: t.key, Problem: fmt.Sprintf("must be written as %s, not as %s", t.form, metaTypes[got]), errs: []error{ErrInvalid, err}}
			}
		}
		return nil, nil, &Error{Problem: strings.TrimPrefix(err.Error(), "toml: "), errs: []error{ErrInvalid, err}}
	}

	var errs []error
	reported := map[string]bool{} // keys reported: their sub-keys are not
	under := func(k toml.Key) bool {
		for i := 1; i <= len(k); i++ {
			if reported[k[:i].String()] {
				return true
			}
		}
		return false
	}
	unknown := func(k toml.Key, hint string) {
		reported[k.String()] = true
		errs = append(errs, &Error{Key: k.String(), Problem: hint, errs: []error{ErrInvalid, ErrUnknownKey}})
	}
	for _, k := range md.Undecoded() {
		if !under(k) {
			unknown(k, suggest(k))
		}
	}
	// The decoder matches keys case-insensitively; the schema is lower case, so a
	// decoded key with an upper-case letter is a near miss.
	for _, k := range md.Keys() {
		if under(k) {
			continue
		}
		for i, part := range k {
			if part != strings.ToLower(part) {
				want := slices.Clone(k[:i+1])
				want[i] = strings.ToLower(part)
				unknown(k[:i+1], fmt.Sprintf("keys are case-sensitive: did you mean %q?", want.String()))
				break
			}
		}
	}
	return raw, errs, nil
}

// suggest returns a hint naming the schema key closest to the unknown key k.
func suggest(k toml.Key) string {
	table := strings.Join(k[:len(k)-1], ".")
	known, ok := schema[table]
	if !ok {
		return ""
	}
	last := k[len(k)-1]
	best, bestDist := "", 3 // suggest only near misses
	for _, name := range known {
		if d := editDistance(strings.ToLower(last), name); d < bestDist {
			best, bestDist = name, d
		}
	}
	if best == "" {
		if table == "" {
			return "known top-level keys: " + strings.Join(known, ", ")
		}
		return fmt.Sprintf("known keys in %s: %s", table, strings.Join(known, ", "))
	}
	return fmt.Sprintf("did you mean %q?", strings.TrimPrefix(table+"."+best, "."))
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
