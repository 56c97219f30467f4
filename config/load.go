package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"gopkg.in/yaml.v3"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// EnvMasterKeys is the environment variable that may hold the master keys ("id:base64key" lines).
const EnvMasterKeys = "SWITCHBOARD_MASTER_KEYS"

// Load reads the YAML file at path ("" for none: the built-in defaults), applies SWITCHBOARD_*
// environment variables and the flags of flags that name a setting (see AddFlags; flags may be
// nil), derives what is derived and checks the result. On any problem it returns a
// *gateway.Error (code invalid_field) wrapping Problems: every problem at once, each with its
// file and line, or the environment variable or flag that set the value.
func Load(path string, flags *pflag.FlagSet) (*Config, error) {
	var c *Config
	var r *report
	if path == "" {
		c = defaults()
		c.loc = newLocations("")
		r = newReport(c.loc)
	} else {
		data, err := os.ReadFile(path)
		if err != nil {
			code := gateway.EInternal
			if errors.Is(err, fs.ErrNotExist) {
				code = gateway.ENotFound
			}
			return nil, gateway.WrapError(code, err, "cannot read the config file %s", path)
		}
		c, r = parse(path, data)
	}
	overlay(c, r, flags)
	finish(c, r)
	if err := problemsError(r.sorted()); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadDev is Load for `serve --dev` without a file: Dev's configuration with the environment and
// flags applied over it.
func LoadDev(flags *pflag.FlagSet) (*Config, error) {
	c := devBase()
	r := newReport(c.loc)
	overlay(c, r, flags)
	devKeys(c)
	finish(c, r)
	if err := problemsError(r.sorted()); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse reads a configuration from data, as if from the file name, without looking at the
// environment or flags. It is Load for tests and for checking a file as written.
func Parse(name string, data []byte) (*Config, error) {
	c, r := parse(name, data)
	finish(c, r)
	if err := problemsError(r.sorted()); err != nil {
		return nil, err
	}
	return c, nil
}

// Check reads the file at path and returns every problem in it, in line order, or nil. It looks
// at the file alone, not the environment: this is `switchboard config check FILE`.
func Check(path string) []Problem {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return []Problem{{File: path, Message: fmt.Sprintf("cannot read the file: %v", err)}}
	}
	c, r := parse(path, data)
	finish(c, r)
	return r.sorted()
}

func parse(name string, data []byte) (*Config, *report) {
	c := defaults()
	c.loc = newLocations(name)
	r := newReport(c.loc)
	decodeFile(c, data, r)
	return c, r
}

// Dev returns the configuration of `serve --dev`: the defaults, the API on 127.0.0.1:8080, the
// master keys in <data_dir>/master.keys (the server generates the file when it is missing), and
// a tenant "demo" with a WhatsApp account "sales" and a Teams account "ops", both on the sandbox
// driver.
func Dev() *Config {
	c := devBase()
	devKeys(c)
	finish(c, newReport(c.loc))
	return c
}

func devBase() *Config {
	c := defaults()
	c.loc = newLocations("")
	c.Server.Listen = "127.0.0.1:8080"
	channel := func(account string) *ChannelConfig {
		cc := &ChannelConfig{Accounts: []AccountConfig{{Name: account, Driver: DriverSandbox}}}
		cc.setDefaults()
		cc.Consent.Replies = RepliesConfig{
			OptOut: "You are unsubscribed and will get no more messages. Reply START to subscribe again.",
			OptIn:  "You are subscribed. Reply STOP to unsubscribe.",
			Help:   "Reply STOP to unsubscribe, START to subscribe again.",
		}
		return cc
	}
	c.Tenants = []TenantConfig{{
		ID:       "demo",
		Channels: ChannelsConfig{WhatsApp: channel("sales"), Teams: channel("ops")},
	}}
	return c
}

func devKeys(c *Config) {
	if c.Security.MasterKeysFile == "" && c.Security.MasterKeys == "" && c.DataDir != "" {
		c.Security.MasterKeysFile = filepath.Join(c.DataDir, "master.keys")
	}
}

// AddFlags defines the flags Load understands on fs: --data-dir, --listen, --log-level,
// --log-format, --store-driver, --store-dsn, --bus-urls and --master-keys-file. Load also binds
// a flag named after any other setting's path with dashes (--server-request-timeout).
func AddFlags(set *pflag.FlagSet) {
	set.String("data-dir", "", "directory for the database, the bus store and other state (default ./data)")
	set.String("listen", "", "address of the HTTP API, host:port (default :8080)")
	set.String("log-level", "", "trace, debug, info, warn or error (default info)")
	set.String("log-format", "", "json or console (default json)")
	set.String("store-driver", "", "sqlite or postgres (default sqlite)")
	set.String("store-dsn", "", "SQLite file or PostgreSQL URL (default <data-dir>/switchboard.db)")
	set.StringSlice("bus-urls", nil, "external NATS URLs, comma-separated (default: the embedded server)")
	set.String("master-keys-file", "", "file of master keys, id:base64key per line")
}

// setting is one scalar setting outside tenants with its environment variable and flag names.
type setting struct {
	key   string   // server.listen
	env   string   // SWITCHBOARD_SERVER_LISTEN
	flags []string // listen, server-listen
}

func settings() []setting {
	short := map[string]string{"server.listen": "listen", "security.master_keys_file": "master-keys-file"}
	var out []setting
	for _, key := range leafKeys(reflect.TypeFor[Config](), "") {
		s := setting{
			key: key,
			env: "SWITCHBOARD_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_")),
		}
		if f, ok := short[key]; ok {
			s.flags = append(s.flags, f)
		}
		s.flags = append(s.flags, strings.NewReplacer(".", "-", "_", "-").Replace(key))
		out = append(out, s)
	}
	return out
}

// leafKeys lists the paths of the scalar settings of struct type t, leaving out tenants.
func leafKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		name, ok := yamlName(t.Field(i))
		if !ok || (prefix == "" && name == "tenants") {
			continue
		}
		ft := t.Field(i).Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		key := joinPath(prefix, name)
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[yaml.Node]() {
			keys = append(keys, leafKeys(ft, key)...)
			continue
		}
		keys = append(keys, key)
	}
	return keys
}

// overlay applies environment variables and changed flags, through viper, over c.
func overlay(c *Config, r *report, flags *pflag.FlagSet) {
	v := viper.New()
	v.SetEnvPrefix("SWITCHBOARD")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	root := reflect.ValueOf(c).Elem()
	for _, s := range settings() {
		_ = v.BindEnv(s.key, s.env) // fails only without a key
		var flag *pflag.Flag
		if flags != nil {
			for _, name := range s.flags {
				if f := flags.Lookup(name); f != nil {
					flag = f
					_ = v.BindPFlag(s.key, f) // fails only for a nil flag
					break
				}
			}
		}
		if !v.IsSet(s.key) {
			continue
		}
		source := "env " + s.env
		if flag != nil && flag.Changed {
			source = "flag --" + flag.Name
		}
		c.loc.sources[s.key] = source
		if err := setPath(root, s.key, v.Get(s.key)); err != nil {
			r.at(source, 0, s.key, "%v", err)
		}
	}
	_ = v.BindEnv("master_keys", EnvMasterKeys)
	if v.IsSet("master_keys") {
		c.Security.MasterKeys = Secret(v.GetString("master_keys"))
	}
}

// setPath sets the setting at key (a dotted path of YAML names) under root from a value given by
// viper: a string from the environment, or a flag's typed value.
func setPath(root reflect.Value, key string, raw any) error {
	v := root
	for _, name := range strings.Split(key, ".") {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		i, ok := fieldIndex(v.Type(), name)
		if !ok {
			return fmt.Errorf("no such setting")
		}
		v = v.Field(i)
	}
	var text string
	switch x := raw.(type) {
	case []string:
		text = strings.Join(x, ",")
	default:
		text = fmt.Sprint(x)
	}
	return setScalar(v, text)
}
