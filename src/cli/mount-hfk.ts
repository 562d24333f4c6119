#!/usr/bin/env node
// Entry point of the mount helper bundle (dist/mount.hfk.mjs; /sbin/mount.hfk runs it).
import { runMountHelper } from './mounthelper.ts';

process.exitCode = runMountHelper(process.argv.slice(2));
