// DCP's `.metadata` pickle as data: read with the data-only unpickler, its allow-list extended to exactly
// DCP's metadata dataclasses, and written with volt's pickler so that Python's pickle.load rebuilds them.
#pragma once

#include <string>

#include "volt/checkpoint/dcp.h"

namespace volt::detail {

/// Parses and checks the structure (not the data files): every tensor chunk has a storage entry, chunks
/// tile their tensor. Errors name `path` and the defect.
DcpMetadata parse_dcp_metadata(const char* data, size_t size, const std::string& path);

/// The pickle of a torch.distributed.checkpoint.metadata.Metadata equal to `metadata`.
std::string pickle_dcp_metadata(const DcpMetadata& metadata);

/// Throws volt::Error (naming `what` and `name`) unless the chunks lie inside `info.size`, do not overlap
/// and cover every element.
void check_tiling(const std::string& what, const std::string& name, const DcpTensorInfo& info);

/// "float32" for kFloat (the torch attribute a pickle names); throws for dtypes DCP files cannot hold here.
const char* dcp_dtype_name(c10::ScalarType dtype);

}  // namespace volt::detail
