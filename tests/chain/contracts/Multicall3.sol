// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// The part of the Multicall3 interface that StreamGate's ownership checks batch through:
/// `aggregate3` and `getBlockNumber`, with the same ABI and selectors as the contract
/// deployed at 0xcA11bde05977b3631167028862bE2a173976CA11 on most chains. Written here
/// from the interface, so the tests compile it from source like everything else.
contract Multicall3 {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    /// Calls each target in order. A failed call reverts the whole batch unless that call
    /// allows failure, in which case its result carries `success = false` and the revert data.
    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory results) {
        uint256 n = calls.length;
        results = new Result[](n);
        for (uint256 i = 0; i < n; i++) {
            Call3 calldata c = calls[i];
            (bool ok, bytes memory ret) = c.target.call(c.callData);
            if (!ok && !c.allowFailure) revert("Multicall3: call failed");
            results[i] = Result(ok, ret);
        }
    }

    /// The number of the block the call executes in.
    function getBlockNumber() external view returns (uint256 blockNumber) {
        blockNumber = block.number;
    }
}
