#!/bin/sh
echo "starting"
sleep 3600
