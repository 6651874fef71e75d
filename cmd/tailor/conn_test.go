package main

import (
	"reflect"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

func openTestConn(dsn string) (driver.Conn, error) {
	o, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	return clickhouse.Open(o)
}

func newScanTarget(t reflect.Type) any { return reflect.New(t).Interface() }

func deref(v any) any {
	rv := reflect.ValueOf(v).Elem()
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return "NULL"
		}
		return rv.Elem().Interface()
	}
	return rv.Interface()
}
