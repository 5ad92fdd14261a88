// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ERC721Holder} from "@openzeppelin/contracts/token/ERC721/utils/ERC721Holder.sol";
import {ERC1155Holder} from "@openzeppelin/contracts/token/ERC1155/utils/ERC1155Holder.sol";

/// A minimal ERC-1271 smart-contract wallet owned by one EOA, for wallet sign-in tests.
///
/// The hash is checked as given: the owner must have signed exactly these 32 bytes, with no
/// further prefix or domain added by the wallet. So an owner's EIP-191 `personal_sign` of a
/// message is valid for `keccak256("\x19Ethereum Signed Message:\n" || len || message)`,
/// the digest an EIP-4361 verifier passes, and an EIP-712 signature is valid for the
/// typed-data digest. (Production wallets such as Safe wrap the hash in their own EIP-712
/// domain first; this one deliberately does not.)
///
/// It can hold ERC-721 and ERC-1155 tokens, so a test can gate on a contract wallet's NFTs.
contract Wallet1271 is IERC1271, ERC721Holder, ERC1155Holder {
    address public immutable owner;

    constructor(address owner_) {
        owner = owner_;
    }

    /// Returns 0x1626ba7e iff `signature` (65 bytes, r || s || v) recovers to `owner`
    /// over `hash`; 0xffffffff otherwise, including for malformed signatures.
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(hash, signature);
        if (err == ECDSA.RecoverError.NoError && signer == owner) {
            return IERC1271.isValidSignature.selector;
        }
        return 0xffffffff;
    }
}
