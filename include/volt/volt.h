// volt: Lightning's Trainer and efficient model initialization for LibTorch. Include this one header.
#pragma once

#include "volt/checkpoint/checkpoint.h"
#include "volt/checkpoint/checkpoint_file.h"
#include "volt/checkpoint/load_state_dict.h"
#include "volt/checkpoint/safetensors.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/config.h"
#include "volt/core/accelerator.h"
#include "volt/core/precision.h"
#include "volt/error.h"
#include "volt/init/counter_rng.h"
#include "volt/init/huge_page_allocator.h"
#include "volt/init/init_options.h"
#include "volt/init/init_scope.h"
#include "volt/trainer/trainer.h"
#include "volt/trainer/trainer_options.h"
