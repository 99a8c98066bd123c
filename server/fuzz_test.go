package server

import (
	"testing"

	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzRunRequest: any bytes that decode as a RunRequest convert to domain
// statements or a field error, without panicking (deeply nested values
// included).
func FuzzRunRequest(f *testing.F) {
	seed := &pb.RunRequest{Statements: []*pb.Statement{
		{Participant: "pg", Op: &pb.Statement_Sql{Sql: &pb.SqlStatement{Sql: "SELECT $1", Args: []*pb.Value{{Kind: &pb.Value_IntValue{IntValue: 1}}}}}},
		{Participant: "s", Op: &pb.Statement_Record{Record: &pb.RecordOperation{Kind: pb.RecordOperation_MERGE,
			Record: &pb.RecordId{Table: "t", Id: &pb.Value{Kind: &pb.Value_StringValue{StringValue: "x"}}}}}},
	}}
	b, _ := proto.Marshal(seed)
	f.Add(b)
	f.Add([]byte{0x12, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req pb.RunRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		if _, err := txOptions(req.GetOptions()); err != nil {
			return
		}
		for i, s := range req.GetStatements() {
			st, err := statement(s, "statements")
			if err == nil && st.Participant != s.GetParticipant() {
				t.Fatalf("statement %d lost its participant", i)
			}
		}
	})
}
