package surrealdb

import (
	"reflect"

	"github.com/fxamacker/cbor/v2"
	"github.com/surrealdb/surrealdb.go/pkg/models"
)

// newEncMode builds the CBOR encoder for requests: the SurrealDB tags of
// surrealcbor, built once per participant (surrealcbor rebuilds its tag set
// on every Marshal call, which costs CPU on every request).
func newEncMode() (cbor.EncMode, error) {
	tags := cbor.NewTagSet()
	for _, ct := range []struct {
		tag uint64
		typ any
	}{
		{models.TagNone, models.CustomNil{}},
		{models.TagTable, models.Table("")},
		{models.TagRecordID, models.RecordID{}},
		{models.TagCustomDatetime, models.CustomDateTime{}},
		{models.TagCustomDuration, models.CustomDuration{}},
		{models.TagFuture, models.Future{}},
		{models.TagStringUUID, models.UUIDString("")},
		{models.TagStringDecimal, models.DecimalString("")},
		{models.TagStringDuration, models.CustomDurationString("")},
		{models.TagSpecBinaryUUID, models.UUID{}},
		{models.TagGeometryPoint, models.GeometryPoint{}},
		{models.TagGeometryLine, models.GeometryLine{}},
		{models.TagGeometryPolygon, models.GeometryPolygon{}},
		{models.TagGeometryMultiPoint, models.GeometryMultiPoint{}},
		{models.TagGeometryMultiLine, models.GeometryMultiLine{}},
		{models.TagGeometryMultiPolygon, models.GeometryMultiPolygon{}},
		{models.TagGeometryCollection, models.GeometryCollection{}},
	} {
		opts := cbor.TagOptions{EncTag: cbor.EncTagRequired, DecTag: cbor.DecTagRequired}
		if err := tags.Add(opts, reflect.TypeOf(ct.typ), ct.tag); err != nil {
			return nil, err
		}
	}
	return cbor.EncOptions{Time: cbor.TimeRFC3339, TimeTag: cbor.EncTagRequired}.EncModeWithTags(tags)
}
