package guest

import (
	"encoding/binary"
	"fmt"
)

// asm assembles the boot sector. Each method emits one instruction; its comment gives the
// Intel-syntax instruction and the encoding (Intel SDM vol. 2: opcode, ModRM = mod|reg|rm).
// Addresses are absolute: the BIOS loads the sector at 0x7c00.
type asm struct {
	b      []byte
	labels map[string]int
	fix    []fixup
}

type fixup struct {
	at, size int // where the displacement goes, 1 or 4 bytes
	label    string
	rel      bool // relative to the end of the displacement (jumps); else absolute address
}

const loadAddr = 0x7c00

func newAsm() *asm { return &asm{labels: map[string]int{}} }

func (a *asm) emit(b ...byte)     { a.b = append(a.b, b...) }
func (a *asm) imm32(v uint32)     { a.b = binary.LittleEndian.AppendUint32(a.b, v) }
func (a *asm) imm16(v uint16)     { a.b = binary.LittleEndian.AppendUint16(a.b, v) }
func (a *asm) label(name string)  { a.labels[name] = len(a.b) }
func (a *asm) addr(l string) uint { return uint(loadAddr + a.labels[l]) }
func (a *asm) ref(size int, l string, rel bool) {
	a.fix = append(a.fix, fixup{len(a.b), size, l, rel})
	a.b = append(a.b, make([]byte, size)...)
}

// --- 16-bit real mode ---

func (a *asm) cli()            { a.emit(0xfa) }                         // cli: FA
func (a *asm) xorAXAX16()      { a.emit(0x31, 0xc0) }                   // xor ax, ax: 31 /r, ModRM 11 000 000
func (a *asm) movDSAX()        { a.emit(0x8e, 0xd8) }                   // mov ds, ax: 8E /r, ModRM 11 011(ds) 000(ax)
func (a *asm) inAL92()         { a.emit(0xe4, 0x92) }                   // in al, 0x92 (system control port A): E4 ib
func (a *asm) orAL(v byte)     { a.emit(0x0c, v) }                      // or al, imm8: 0C ib
func (a *asm) outAL92()        { a.emit(0xe6, 0x92) }                   // out 0x92, al: E6 ib (bit 1 = fast A20 enable)
func (a *asm) lgdt16(l string) { a.emit(0x0f, 0x01, 0x16); a.ref16(l) } // lgdt [disp16]: 0F 01 /2, ModRM 00 010 110
func (a *asm) movEAXCR0()      { a.emit(0x0f, 0x20, 0xc0) }             // mov eax, cr0: 0F 20 /r, ModRM 11 000(cr0) 000(eax)
func (a *asm) movCR0EAX()      { a.emit(0x0f, 0x22, 0xc0) }             // mov cr0, eax: 0F 22 /r

func (a *asm) movESAX()          { a.emit(0x8e, 0xc0) }              // mov es, ax: 8E /r, ModRM 11 000(es) 000(ax)
func (a *asm) movAX16r(v uint16) { a.emit(0xb8); a.imm16(v) }        // mov ax, imm16: B8 iw
func (a *asm) movBX16(v uint16)  { a.emit(0xbb); a.imm16(v) }        // mov bx, imm16: BB iw
func (a *asm) movCX16r(v uint16) { a.emit(0xb9); a.imm16(v) }        // mov cx, imm16: B9 iw
func (a *asm) movDH(v byte)      { a.emit(0xb6, v) }                 // mov dh, imm8: B6 ib
func (a *asm) int13()            { a.emit(0xcd, 0x13) }              // int 0x13 (BIOS disk services): CD ib
func (a *asm) jc8(l string)      { a.emit(0x72); a.ref(1, l, true) } // jc rel8: 72 cb

// protectedMode enters 32-bit protected mode from real mode and jumps to label pm (in the
// code segment, selector 0x08): interrupts off, A20 on, the GDT (label gdtdesc), CR0.PE.
func (a *asm) protectedMode(pm string) {
	a.cli()
	a.xorAXAX16()
	a.movDSAX() // lgdt reads gdtdesc through DS
	a.inAL92()
	a.orAL(0x02)
	a.outAL92()
	a.lgdt16("gdtdesc")
	a.movEAXCR0()
	a.orAL(0x01)
	a.movCR0EAX()
	a.ljmp32(0x08, pm)
}

// ljmp32 is `jmp dword sel:label` from 16-bit code: 66 (operand size 32) EA ptr16:32.
func (a *asm) ljmp32(sel uint16, l string) { a.emit(0x66, 0xea); a.ref(4, l, false); a.imm16(sel) }

func (a *asm) ref16(l string) { a.ref(2, l, false) }

// --- 32-bit protected mode ---

func (a *asm) movAX16(v uint16) { a.emit(0x66, 0xb8); a.imm16(v) } // mov ax, imm16: 66 B8 iw
func (a *asm) movSegAX(seg byte) {
	// mov sreg, ax: 8E /r, ModRM 11 sreg 000; sreg es=0 ss=2 ds=3 fs=4 gs=5
	a.emit(0x8e, 0xc0|seg<<3)
}
func (a *asm) movESP(v uint32)     { a.emit(0xbc); a.imm32(v) }             // mov esp, imm32: BC id
func (a *asm) movEAX(v uint32)     { a.emit(0xb8); a.imm32(v) }             // mov eax, imm32: B8 id
func (a *asm) movECX(v uint32)     { a.emit(0xb9); a.imm32(v) }             // mov ecx, imm32: B9 id
func (a *asm) movEDI(v uint32)     { a.emit(0xbf); a.imm32(v) }             // mov edi, imm32: BF id
func (a *asm) movESIMem(v uint32)  { a.emit(0x8b, 0x35); a.imm32(v) }       // mov esi, [disp32]: 8B /r, ModRM 00 110(esi) 101
func (a *asm) xorEAXEAX()          { a.emit(0x31, 0xc0) }                   // xor eax, eax: 31 /r, ModRM 11 000 000
func (a *asm) xorEBXEBX()          { a.emit(0x31, 0xdb) }                   // xor ebx, ebx: 31 /r, ModRM 11 011 011
func (a *asm) movDX16(v uint16)    { a.emit(0x66, 0xba); a.imm16(v) }       // mov dx, imm16: 66 BA iw
func (a *asm) movAL(v byte)        { a.emit(0xb0, v) }                      // mov al, imm8: B0 ib
func (a *asm) outDXAL()            { a.emit(0xee) }                         // out dx, al: EE
func (a *asm) incMemEAX()          { a.emit(0xff, 0x00) }                   // inc dword [eax]: FF /0, ModRM 00 000 000
func (a *asm) incMemEDI()          { a.emit(0xff, 0x07) }                   // inc dword [edi]: FF /0, ModRM 00 000 111
func (a *asm) incMemAbs(v uint32)  { a.emit(0xff, 0x05); a.imm32(v) }       // inc dword [disp32]: FF /0, ModRM 00 000 101
func (a *asm) movMemEAX8(v uint32) { a.emit(0xc7, 0x40, 0x08); a.imm32(v) } // mov dword [eax+8], imm32: C7 /0 disp8, ModRM 01 000 000
func (a *asm) invlpgEAX()          { a.emit(0x0f, 0x01, 0x38) }             // invlpg [eax]: 0F 01 /7, ModRM 00 111 000
func (a *asm) invlpgEDI()          { a.emit(0x0f, 0x01, 0x3f) }             // invlpg [edi]: 0F 01 /7, ModRM 00 111 111
func (a *asm) invlpgAbs(v uint32)  { a.emit(0x0f, 0x01, 0x3d); a.imm32(v) } // invlpg [disp32]: 0F 01 /7, ModRM 00 111 101
func (a *asm) movMemAbs(addr, v uint32) {
	a.emit(0xc7, 0x05) // mov dword [disp32], imm32: C7 /0, ModRM 00 000 101
	a.imm32(addr)
	a.imm32(v)
}
func (a *asm) addEAX(v uint32) { a.emit(0x05); a.imm32(v) }       // add eax, imm32: 05 id
func (a *asm) subEAX(v uint32) { a.emit(0x2d); a.imm32(v) }       // sub eax, imm32: 2D id
func (a *asm) cmpEAX(v uint32) { a.emit(0x3d); a.imm32(v) }       // cmp eax, imm32: 3D id
func (a *asm) addEDI(v uint32) { a.emit(0x81, 0xc7); a.imm32(v) } // add edi, imm32: 81 /0, ModRM 11 000 111
func (a *asm) cmpEDI(v uint32) { a.emit(0x81, 0xff); a.imm32(v) } // cmp edi, imm32: 81 /7, ModRM 11 111 111
func (a *asm) decECX()         { a.emit(0x49) }                   // dec ecx: 48+rd (one byte in 32-bit mode)
func (a *asm) decESI()         { a.emit(0x4e) }                   // dec esi: 48+rd, esi = 6
func (a *asm) incESI()         { a.emit(0x46) }                   // inc esi: 40+rd
func (a *asm) incBL()          { a.emit(0xfe, 0xc3) }             // inc bl: FE /0, ModRM 11 000 011
func (a *asm) imulEDXEAX(v uint32) {
	a.emit(0x69, 0xd0) // imul edx, eax, imm32: 69 /r id, ModRM 11 010(edx) 000(eax)
	a.imm32(v)
}
func (a *asm) addEDX(v uint32) { a.emit(0x81, 0xc2); a.imm32(v) } // add edx, imm32: 81 /0, ModRM 11 000 010
func (a *asm) andEDX(v uint32) { a.emit(0x81, 0xe2); a.imm32(v) } // and edx, imm32: 81 /4, ModRM 11 100 010
func (a *asm) movESIEAX()      { a.emit(0x89, 0xc6) }             // mov esi, eax: 89 /r, ModRM 11 000(eax) 110(esi)
func (a *asm) shlESI(n byte)   { a.emit(0xc1, 0xe6, n) }          // shl esi, imm8: C1 /4 ib, ModRM 11 100 110
func (a *asm) addESI(v uint32) { a.emit(0x81, 0xc6); a.imm32(v) } // add esi, imm32: 81 /0, ModRM 11 000 110
func (a *asm) movEBXEDX()      { a.emit(0x89, 0xd3) }             // mov ebx, edx: 89 /r, ModRM 11 010(edx) 011(ebx)
func (a *asm) shlEBX(n byte)   { a.emit(0xc1, 0xe3, n) }          // shl ebx, imm8: C1 /4 ib, ModRM 11 100 011
func (a *asm) addEBX(v uint32) { a.emit(0x81, 0xc3); a.imm32(v) } // add ebx, imm32: 81 /0, ModRM 11 000 011
func (a *asm) movESI4EBX()     { a.emit(0x89, 0x5e, 0x04) }       // mov [esi+4], ebx: 89 /r disp8, ModRM 01 011 110
func (a *asm) movEAXEDX()      { a.emit(0x89, 0xd0) }             // mov eax, edx: 89 /r, ModRM 11 010(edx) 000(eax)
func (a *asm) movEAXEAX4()     { a.emit(0x8b, 0x40, 0x04) }       // mov eax, [eax+4]: 8B /r disp8, ModRM 01 000 000

// jb8, jae8 and jnz8 jump to a label within -128..127 bytes: 72 cb / 73 cb / 75 cb.
func (a *asm) jb8(l string)  { a.emit(0x72); a.ref(1, l, true) }
func (a *asm) jae8(l string) { a.emit(0x73); a.ref(1, l, true) }
func (a *asm) jnz8(l string) { a.emit(0x75); a.ref(1, l, true) }

// jnz32 and jmp32 jump anywhere: 0F 85 cd / E9 cd.
func (a *asm) jnz32(l string) { a.emit(0x0f, 0x85); a.ref(4, l, true) }
func (a *asm) jmp32(l string) { a.emit(0xe9); a.ref(4, l, true) }

// flatSegments loads the flat data segment (selector 0x10) into ds, es, ss, fs and gs.
func (a *asm) flatSegments() {
	a.movAX16(0x10)
	for _, seg := range []byte{3, 0, 2, 4, 5} { // ds es ss fs gs
		a.movSegAX(seg)
	}
}

// delay spins n iterations of dec ecx / jnz (about 2 ns each under TCG here).
func (a *asm) delay(n uint32) {
	a.movECX(n)
	l := fmt.Sprintf("delay%d", len(a.b))
	a.label(l)
	a.decECX()
	a.jnz8(l)
}

func (a *asm) hlt() { a.emit(0xf4) } // hlt: F4

// padTo appends zero bytes up to offset n (nothing if the code is already there).
func (a *asm) padTo(n int) {
	for len(a.b) < n {
		a.emit(0)
	}
}

func (a *asm) align(n int) {
	for len(a.b)%n != 0 {
		a.emit(0x90) // nop
	}
}

// link resolves the label references.
func (a *asm) link() error {
	for _, f := range a.fix {
		target, ok := a.labels[f.label]
		if !ok {
			return fmt.Errorf("undefined label %q", f.label)
		}
		v := int64(loadAddr + target)
		if f.rel {
			v = int64(target - (f.at + f.size))
		}
		switch f.size {
		case 1:
			if v < -128 || v > 127 {
				return fmt.Errorf("jump to %q out of rel8 range (%d)", f.label, v)
			}
			a.b[f.at] = byte(int8(v))
		case 2:
			binary.LittleEndian.PutUint16(a.b[f.at:], uint16(v))
		case 4:
			binary.LittleEndian.PutUint32(a.b[f.at:], uint32(v))
		}
	}
	return nil
}
