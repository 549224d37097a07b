// Pickle's instruction set (Python's Lib/pickletools.py; LibTorch names the same bytes PickleOpCode in
// torch/csrc/jit/serialization/pickler.h): one table that the unpickler and the pickler both speak, so
// neither spells an instruction as a character literal. Comments give Python's names.
#pragma once

#include <cstdint>

namespace volt::detail {

enum class PickleOpcode : uint8_t {
  // Protocol 0 and 1
  kMark = '(',            // MARK
  kStop = '.',            // STOP
  kPop = '0',             // POP
  kPopMark = '1',         // POP_MARK
  kDup = '2',             // DUP
  kFloat = 'F',           // FLOAT: text
  kInt = 'I',             // INT: text; I00 / I01 are False / True
  kBinInt = 'J',          // BININT: 4-byte signed
  kBinInt1 = 'K',         // BININT1: 1-byte unsigned
  kLong = 'L',            // LONG: text
  kBinInt2 = 'M',         // BININT2: 2-byte unsigned
  kNone = 'N',            // NONE
  kPersId = 'P',          // PERSID: text persistent id (volt reads only BINPERSID)
  kBinPersId = 'Q',       // BINPERSID
  kReduce = 'R',          // REDUCE
  kString = 'S',          // STRING: quoted text (not read)
  kBinString = 'T',       // BINSTRING: Python 2 str, 4-byte length
  kShortBinString = 'U',  // SHORT_BINSTRING: 1-byte length
  kUnicode = 'V',         // UNICODE: raw-unicode-escape text (not read)
  kBinUnicode = 'X',      // BINUNICODE: UTF-8, 4-byte length
  kAppend = 'a',          // APPEND
  kBuild = 'b',           // BUILD
  kGlobal = 'c',          // GLOBAL: module and name as text lines
  kDict = 'd',            // DICT
  kEmptyDict = '}',       // EMPTY_DICT
  kAppends = 'e',         // APPENDS
  kGet = 'g',             // GET: text index
  kBinGet = 'h',          // BINGET: 1-byte index
  kInst = 'i',            // INST (not read)
  kLongBinGet = 'j',      // LONG_BINGET: 4-byte index
  kList = 'l',            // LIST
  kEmptyList = ']',       // EMPTY_LIST
  kObj = 'o',             // OBJ (not read)
  kPut = 'p',             // PUT: text index
  kBinPut = 'q',          // BINPUT: 1-byte index
  kLongBinPut = 'r',      // LONG_BINPUT: 4-byte index
  kSetItem = 's',         // SETITEM
  kTuple = 't',           // TUPLE
  kEmptyTuple = ')',      // EMPTY_TUPLE
  kSetItems = 'u',        // SETITEMS
  kBinFloat = 'G',        // BINFLOAT: 8-byte big-endian double
  // Protocol 2
  kProto = 0x80,     // PROTO
  kNewObj = 0x81,    // NEWOBJ: cls.__new__(cls, *args)
  kExt1 = 0x82,      // EXT1 (not read)
  kExt2 = 0x83,      // EXT2 (not read)
  kExt4 = 0x84,      // EXT4 (not read)
  kTuple1 = 0x85,    // TUPLE1
  kTuple2 = 0x86,    // TUPLE2
  kTuple3 = 0x87,    // TUPLE3
  kNewTrue = 0x88,   // NEWTRUE
  kNewFalse = 0x89,  // NEWFALSE
  kLong1 = 0x8a,     // LONG1: 1-byte length, little-endian two's complement
  kLong4 = 0x8b,     // LONG4: 4-byte length
  // Protocol 3
  kBinBytes = 'B',       // BINBYTES: 4-byte length
  kShortBinBytes = 'C',  // SHORT_BINBYTES: 1-byte length
  // Protocol 4
  kShortBinUnicode = 0x8c,  // SHORT_BINUNICODE: 1-byte length
  kBinUnicode8 = 0x8d,      // BINUNICODE8: 8-byte length
  kBinBytes8 = 0x8e,        // BINBYTES8: 8-byte length
  kEmptySet = 0x8f,         // EMPTY_SET
  kAddItems = 0x90,         // ADDITEMS
  kFrozenSet = 0x91,        // FROZENSET
  kNewObjEx = 0x92,         // NEWOBJ_EX (not read)
  kStackGlobal = 0x93,      // STACK_GLOBAL
  kMemoize = 0x94,          // MEMOIZE
  kFrame = 0x95,            // FRAME: 8-byte length, a hint only
};

}  // namespace volt::detail
